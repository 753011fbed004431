-- The next trading day's picks as research chose them (CORE.NEXT_DAY_PICKS, loaded by
-- snowflake_next_day_picks): per pick day, ranked by score, with the day's total weight.
-- PERIOD_START / PERIOD_END (epoch ms, end exclusive) bound the in-sample bars, all before DAY.
select
    day,
    rank() over (partition by day order by score desc) as pick_rank,
    symbol,
    strategy,
    timeframe,
    params,
    bucket,
    weight,
    sum(weight) over (partition by day) as day_weight,
    score,
    dsr,
    sharpe,
    total_return,
    max_drawdown,
    period_start,
    period_end,
    loaded_at
from {{ source('core', 'next_day_picks') }}
