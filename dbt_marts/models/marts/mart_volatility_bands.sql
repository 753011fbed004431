-- Volatility (Bollinger-style) bands over the last 20 one-minute closes of the session.
with stats as (
    select
        bar_id,
        symbol,
        window_start,
        close,
        count(*) over w as bars_in_window,
        avg(close) over w as mean_close,
        stddev_samp(close) over w as std_close
    from {{ source('core', 'fact_ticks_60s') }}
    window w as (
        partition by symbol, cast(floor(window_start / 86400000) as bigint)
        order by window_start
        rows between 19 preceding and current row
    )
)
select
    bar_id,
    symbol,
    window_start,
    close,
    case when bars_in_window = 20 then mean_close end as band_mid,
    case when bars_in_window = 20 then std_close end as band_std,
    case when bars_in_window = 20 then mean_close + 2 * std_close end as band_upper,
    case when bars_in_window = 20 then mean_close - 2 * std_close end as band_lower
from stats
