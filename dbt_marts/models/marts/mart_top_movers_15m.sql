-- Top movers over 15 minutes, from the 1 m facts.
with bars as (
    select
        symbol,
        window_start,
        cast(floor(window_start / 900000) as bigint) * 900000 as bucket_start,
        open, close, volume
    from {{ source('core', 'fact_ticks_60s') }}
),
buckets as (
    select
        symbol,
        bucket_start,
        min_by(open, window_start) as open_price,
        max_by(close, window_start) as close_price,
        sum(volume) as volume,
        count(*) as bars
    from bars
    group by symbol, bucket_start
)
select
    symbol,
    bucket_start,
    bucket_start + 900000 as bucket_end,
    open_price,
    close_price,
    close_price - open_price as price_change,
    (close_price - open_price) / open_price * 100 as pct_change,
    volume,
    bars,
    rank() over (partition by bucket_start order by abs(close_price - open_price) / open_price desc) as move_rank
from buckets
