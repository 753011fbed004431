{#- The body of an OVER clause: one symbol's bars of one session (UTC day) in time order, the last
    `bars` bars up to the current one (every bar so far when `bars` is none). Snowflake has no named
    WINDOW clause, so each OVER spells its window out; this keeps the spelling in one place. -#}
{% macro session_window(bars=none) -%}
partition by symbol, cast(floor(window_start / 86400000) as bigint)
order by window_start
rows between {{ 'unbounded' if bars is none else bars - 1 }} preceding and current row
{%- endmacro %}
