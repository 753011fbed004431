-- Rolling VWAP over the last 30 one-minute bars of the session (null until 30 bars).
with w as (
    select
        bar_id,
        symbol,
        window_start,
        close,
        count(*) over r as bars_in_window,
        sum(notional) over r as notional_30,
        sum(volume) over r as volume_30
    from {{ source('core', 'fact_ticks_60s') }}
    window r as (
        partition by symbol, cast(floor(window_start / 86400000) as bigint)
        order by window_start
        rows between 29 preceding and current row
    )
)
select
    bar_id,
    symbol,
    window_start,
    close,
    case when bars_in_window = 30 then notional_30 / nullif(volume_30, 0) end as rolling_vwap_30m
from w
