-- Pipeline minute metrics: per minute (the last minute of a bar's window: the one it closed in), timeframe and symbol,
-- how many golden bars closed and their emit latency (closed_at_ms - window_end: from the end of
-- the window to the streaming worker emitting the bar, null where the facts carry no
-- closed_at_ms, e.g. bars built offline). Dead letters per minute are not in the warehouse yet.
with bars as (
    select '1m' as timeframe, symbol, window_end, closed_at_ms from {{ source('core', 'fact_ticks_60s') }}
    union all
    select '5m' as timeframe, symbol, window_end, closed_at_ms from {{ source('core', 'fact_ticks_300s') }}
)
select
    cast(floor((window_end - 1) / 60000) as bigint) * 60000 as minute_start,
    timeframe,
    symbol,
    count(*) as bars,
    count(closed_at_ms) as bars_with_latency,
    percentile_cont(0.5) within group (order by closed_at_ms - window_end) as emit_latency_p50_ms,
    max(closed_at_ms - window_end) as emit_latency_max_ms
from bars
group by cast(floor((window_end - 1) / 60000) as bigint) * 60000, timeframe, symbol
