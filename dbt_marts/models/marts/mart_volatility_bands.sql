-- Volatility (Bollinger-style) bands over the last 20 one-minute closes of the session.
with stats as (
    select
        bar_id,
        symbol,
        window_start,
        close,
        count(*) over ({{ session_window(20) }}) as bars_in_window,
        avg(close) over ({{ session_window(20) }}) as mean_close,
        stddev_samp(close) over ({{ session_window(20) }}) as std_close
    from {{ source('core', 'fact_ticks_60s') }}
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
