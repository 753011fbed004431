{#- A dead-letter reason as a SQL string literal, only if it is one of var('dead_letter_reasons')
    (tickforge.platform.reasons.Reason): a model naming a reason that was renamed or removed fails
    to compile instead of silently counting nothing. -#}
{% macro dead_letter_reason(name) %}
    {%- if name not in var('dead_letter_reasons') -%}
        {{ exceptions.raise_compiler_error("'" ~ name ~ "' is not a dead-letter reason: " ~ var('dead_letter_reasons') | join(', ')) }}
    {%- endif -%}
    '{{ name }}'
{%- endmacro %}
