-- Pipeline minute metrics: per minute, timeframe and symbol, how many golden bars closed, their
-- emit latency and the dead letters of that minute and symbol.
-- Bars count in the last minute of their window (the one they closed in); emit latency is
-- closed_at_ms - window_end (from the end of the window to the streaming worker emitting the bar,
-- null where the facts carry no closed_at_ms, e.g. bars built offline).
-- Dead letters count in the minute of their event time (of their Kafka time when they have none);
-- symbol '' is the dead letters that name none (e.g. malformed file rows). Rejected input belongs
-- to no timeframe, so a minute and symbol's dead letters stand on its row of every timeframe,
-- with bars = 0 where none closed: total them within one timeframe, never across timeframes.
with timeframes as (
    select '1m' as timeframe
    union all
    select '5m' as timeframe
),
bars as (
    select '1m' as timeframe, symbol, window_end, closed_at_ms from {{ source('core', 'fact_ticks_60s') }}
    union all
    select '5m' as timeframe, symbol, window_end, closed_at_ms from {{ source('core', 'fact_ticks_300s') }}
),
bar_minutes as (
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
),
dead_letter_minutes as (
    select
        minute_start,
        symbol,
        sum(dead_letter_count) as dead_letters,
        sum(case when reason = {{ dead_letter_reason('late') }} then dead_letter_count else 0 end) as late_ticks
    from {{ source('core', 'fact_dead_letters_1m') }}
    group by minute_start, symbol
),
keys as (
    select minute_start, timeframe, symbol from bar_minutes
    union
    select d.minute_start, t.timeframe, d.symbol from dead_letter_minutes as d cross join timeframes as t
)
select
    k.minute_start,
    k.timeframe,
    k.symbol,
    coalesce(b.bars, 0) as bars,
    coalesce(b.bars_with_latency, 0) as bars_with_latency,
    b.emit_latency_p50_ms,
    b.emit_latency_max_ms,
    coalesce(d.dead_letters, 0) as dead_letters,
    coalesce(d.late_ticks, 0) as late_ticks
from keys as k
left join bar_minutes as b
    on b.minute_start = k.minute_start and b.timeframe = k.timeframe and b.symbol = k.symbol
left join dead_letter_minutes as d
    on d.minute_start = k.minute_start and d.symbol = k.symbol
