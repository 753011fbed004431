-- Session VWAP: cumulative notional / volume per symbol, reset at each UTC day.
select
    bar_id,
    symbol,
    window_start,
    cast(floor(window_start / 86400000) as bigint) * 86400000 as session_start,
    close,
    volume,
    sum(notional) over ({{ session_window() }}) / nullif(sum(volume) over ({{ session_window() }}), 0) as session_vwap,
    sum(volume) over ({{ session_window() }}) as session_volume
from {{ source('core', 'fact_ticks_60s') }}
