-- Rolling VWAP over the last 30 one-minute bars of the session (null until 30 bars).
with w as (
    select
        bar_id,
        symbol,
        window_start,
        close,
        count(*) over ({{ session_window(30) }}) as bars_in_window,
        sum(notional) over ({{ session_window(30) }}) as notional_30,
        sum(volume) over ({{ session_window(30) }}) as volume_30
    from {{ source('core', 'fact_ticks_60s') }}
)
select
    bar_id,
    symbol,
    window_start,
    close,
    case when bars_in_window = 30 then notional_30 / nullif(volume_30, 0) end as rolling_vwap_30m
from w
