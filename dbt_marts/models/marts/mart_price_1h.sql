-- One-hour price view: hourly OHLCV rolled up from the 5 m facts.
select
    symbol,
    cast(floor(window_start / 3600000) as bigint) * 3600000 as hour_start,
    min_by(open, window_start) as open,
    max(high) as high,
    min(low) as low,
    max_by(close, window_start) as close,
    sum(volume) as volume,
    sum(notional) / nullif(sum(volume), 0) as vwap,
    sum(trade_count) as trade_count,
    count(*) as bars_5m
from {{ source('core', 'fact_ticks_300s') }}
group by symbol, cast(floor(window_start / 3600000) as bigint) * 3600000
