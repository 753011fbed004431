-- Session VWAP: cumulative notional / volume per symbol, reset at each UTC day.
select
    bar_id,
    symbol,
    window_start,
    cast(floor(window_start / 86400000) as bigint) * 86400000 as session_start,
    close,
    volume,
    sum(notional) over w / nullif(sum(volume) over w, 0) as session_vwap,
    sum(volume) over w as session_volume
from {{ source('core', 'fact_ticks_60s') }}
window w as (
    partition by symbol, cast(floor(window_start / 86400000) as bigint)
    order by window_start
    rows between unbounded preceding and current row
)
