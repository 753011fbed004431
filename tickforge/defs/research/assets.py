"""Research assets: backtest sweeps fanned out by strategy, their scores, the next day's picks,
the scorecard and the Snowflake loads, one daily partition at a time.

Partition P is a UTC day of data, as in the rest of the nightly job; its picks are for
:func:`pick_day` (the next weekday after P) and are chosen from bars strictly before that day
(:func:`tickforge.research.scoring.trailing_sweep` cuts every series there). Inputs: the daily-bar
file (``files/daily_bars``, path in :class:`ResearchResource`) and the golden bars of the registry's
intraday timeframes, read from PostgreSQL over the in-sample window.

Lineage and storage::

    files/daily_bars, postgres/bars_<tf>, bar_reconciliation
      -> backtest_sweep/<strategy>   (S3 archive bucket: research/backtest_sweep/date=P/<strategy>.parquet)
      -> strategy_scores            (PostgreSQL strategy_scores)        -> snowflake_backtest_results
      -> next_day_picks             (PostgreSQL next_day_picks, pick_equity; picks files) -> snowflake_next_day_picks
      -> picks_scorecard            (PostgreSQL picks_scorecard)

Every step exchanges data through S3 and PostgreSQL, never the local filesystem, so each can run
in its own process, pod or Celery worker (see :mod:`tickforge.defs.research.jobs`).
"""

import json
import time
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
)

from tickforge.defs.lib.golden_bars import read_golden_bars
from tickforge.defs.lib.keys import bar_timeframes, golden_bars_key
from tickforge.defs.lib.partitions import daily_partitions
from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.research.resources import ResearchResource
from tickforge.defs.research.store import read_rows, replace_rows
from tickforge.defs.s3.resources import ObjectStoreResource
from tickforge.research.bars import DAILY, BarSeries, ny_midnight_ms, split_bars
from tickforge.research.engine import RESULT_SCHEMA, backtest
from tickforge.research.io import write_picks
from tickforge.research.registry import Registry
from tickforge.research.scoring import PICK_SCHEMA, score, scorecard, select, trailing_sweep
from tickforge.research.store import NEXT_DAY_PICKS, PICK_EQUITY, PICK_KEY, PICKS_SCORECARD, STRATEGY_SCORES
from tickforge.research.walkforward import trailing_window
from tickforge.trading.sessions import regular_hours

DAILY_BARS_KEY = AssetKey(["files", "daily_bars"])
RESEARCH_GROUP = "research"
OWNERS = ["team:research"]
SCORES_KEY = AssetKey("strategy_scores")
PICKS_KEY = AssetKey("next_day_picks")
SCORECARD_KEY = AssetKey("picks_scorecard")
# Step-key (and first asset-key path element) prefixes of the research assets and their checks.
RESEARCH_STEPS = (
    "backtest_sweep",
    "strategy_scores",
    "next_day_picks",
    "picks_scorecard",
    "snowflake_backtest_results",
    "snowflake_next_day_picks",
)


def pick_day(partition: str) -> date:
    """The trading day partition ``P``'s picks are for: the next weekday after P (holidays are not known here)."""
    day = date.fromisoformat(partition) + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def sweep_key(strategy: str) -> AssetKey:
    return AssetKey(["backtest_sweep", strategy])


def sweep_object(partition: str, strategy: str) -> str:
    return f"research/backtest_sweep/date={partition}/{strategy}.parquet"


def golden_timeframes(registry: Registry, timeframes: Sequence[str]) -> list[str]:
    """The registry's intraday timeframes that have golden bar tables."""
    return [tf for tf in registry.universe.timeframes if tf != DAILY and tf in bar_timeframes(timeframes)]


def daily_bars_spec(path: str) -> AssetSpec:
    return AssetSpec(
        DAILY_BARS_KEY,
        description="Daily bars of US equities and ETFs (date, symbol, OHLC, volume, adj_factor), "
        "prices adjusted by adj_factor; a bar's window_start is 00:00 New York of its date. "
        f"Read from `{path}` (ResearchResource.daily_bars_path).",
        kinds={"csv"},
        owners=OWNERS,
        group_name="research_sources",
        metadata={"path": path},
    )


def research_bars(
    research: ResearchResource,
    postgres: PostgresResource,
    registry: Registry,
    start_ms: int,
    end_ms: int,
) -> tuple[dict[str, list[BarSeries]], dict[str, int]]:
    """Series per timeframe: the whole daily file and the golden bars with window_start in
    ``[start_ms, end_ms)``; and the rows refused per timeframe (dead letters, with reasons, in
    the bar readers)."""
    bars: dict[str, list[BarSeries]] = {}
    refused: dict[str, int] = {}
    if DAILY in registry.universe.timeframes:
        bars[DAILY], dead = research.daily_bars()
        refused[DAILY] = dead.height
    for tf in research.golden_timeframes:
        try:
            frame = pl.from_pandas(read_golden_bars(postgres, tf, start_ms, end_ms))
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            frame = pl.DataFrame()
        if research.regular_hours and frame.height:
            # What is swept and scored is what the trading path would trade: not the thin
            # extended hours, where an intraday pick would never be sent.
            frame = regular_hours(frame, "window_start")
        bars[tf], dead = split_bars(frame, tf) if frame.height else ([], pl.DataFrame())
        refused[tf] = dead.height
    return bars, refused


def picks_window_bars(
    research: ResearchResource, postgres: PostgresResource, registry: Registry, day: date
) -> tuple[dict[str, list[BarSeries]], dict[str, int]]:
    """The bars the picks of ``day`` are chosen from (golden bars over its in-sample window)."""
    window = trailing_window(day, registry.walk_forward.train)
    return research_bars(research, postgres, registry, window.start_ms, window.end_ms)


def _markdown(frame: pl.DataFrame, limit: int = 20) -> MetadataValue:
    if frame.is_empty():
        return MetadataValue.md("_none_")
    return MetadataValue.md(frame.head(limit).to_pandas().to_markdown(index=False, floatfmt=".4g"))


def build_sweep_asset(strategy: str, golden: Sequence[str]) -> AssetsDefinition:
    """``backtest_sweep/<strategy>``: the strategy's registry grid on every timeframe and symbol
    over the in-sample window before the pick day."""

    @asset(
        key=sweep_key(strategy),
        partitions_def=daily_partitions,
        deps=[DAILY_BARS_KEY, *(golden_bars_key(tf) for tf in golden), AssetKey("bar_reconciliation")],
        kinds={"python", "numba", "s3"},
        owners=OWNERS,
        group_name=RESEARCH_GROUP,
        description=f"Every `{strategy}` grid point of the registry on every symbol and timeframe, "
        "booked over the in-sample window [pick day - train, pick day) with the registry's costs "
        "(one compiled pass per grid point): one RESULT_SCHEMA row per symbol, timeframe and params.",
        metadata={"strategy": strategy},
    )
    def _sweep(
        context: AssetExecutionContext,
        research: ResearchResource,
        postgres: PostgresResource,
        object_store: ObjectStoreResource,
    ) -> MaterializeResult:
        day = pick_day(context.partition_key)
        registry = research.registry()
        bars, refused = picks_window_bars(research, postgres, registry, day)
        started = time.perf_counter()
        results = trailing_sweep(bars, registry, day, strategy)
        seconds = time.perf_counter() - started
        key = sweep_object(context.partition_key, strategy)
        object_store.write_parquet(object_store.archive_bucket, key, results)
        bar_combinations = int(results["n_bars"].sum()) if results.height else 0
        return MaterializeResult(
            metadata={
                "pick_day": str(day),
                "rows": results.height,
                "params": results["params"].n_unique(),
                "symbols": {tf: len(s) for tf, s in bars.items()},
                "refused_bars": refused,
                "sweep_seconds": round(seconds, 4),
                "bar_combinations": bar_combinations,
                "uri": f"s3://{object_store.archive_bucket}/{key}",
            }
        )

    return _sweep


def read_sweeps(object_store: ObjectStoreResource, partition: str, strategies: Sequence[str]) -> pl.DataFrame:
    frames = [object_store.read_parquet(object_store.archive_bucket, sweep_object(partition, s)) for s in strategies]
    return pl.concat([pl.DataFrame(schema=RESULT_SCHEMA), *(f.cast(RESULT_SCHEMA) for f in frames)])


def build_scores_asset(strategies: Sequence[str]) -> AssetsDefinition:
    @asset(
        key=SCORES_KEY,
        partitions_def=daily_partitions,
        deps=[sweep_key(s) for s in strategies],
        kinds={"python", "postgres"},
        owners=OWNERS,
        group_name=RESEARCH_GROUP,
        description="The day's sweep rows scored within each strategy x timeframe cohort (robust "
        "z-scores, weights, deflated Sharpe over the trials of each symbol), bucketed by drawdown "
        "and gated (gate null: the row may be picked). PostgreSQL `strategy_scores`, one slice per pick day.",
    )
    def strategy_scores(
        context: AssetExecutionContext,
        research: ResearchResource,
        postgres: PostgresResource,
        object_store: ObjectStoreResource,
    ) -> MaterializeResult:
        day = pick_day(context.partition_key)
        registry = research.registry()
        results = read_sweeps(object_store, context.partition_key, strategies)
        scored = score(results, registry.scoring).with_columns(day=pl.lit(day))
        replace_rows(postgres, STRATEGY_SCORES, scored, '"day" = %s', [day])
        cohorts = (
            scored.group_by("strategy", "timeframe")
            .agg(
                rows=pl.len(),
                passing=pl.col("gate").is_null().sum(),
                best_score=pl.col("score").max(),
                median_sharpe=pl.col("sharpe").median(),
            )
            .sort("strategy", "timeframe")
        )
        return MaterializeResult(
            metadata={
                "pick_day": str(day),
                "rows": scored.height,
                "passing": int(scored["gate"].is_null().sum()),
                "cohorts": _markdown(cohorts, 50),
            }
        )

    return strategy_scores


def picks_of_scores(scored: pl.DataFrame, registry: Registry, day: date) -> pl.DataFrame:
    """The picks (PICK_SCHEMA) selected from a day's scored rows."""
    picks = select(scored, registry.scoring)
    return picks.with_columns(day=pl.lit(day)).select(list(PICK_SCHEMA)).cast(PICK_SCHEMA)


def pick_backtests(picks: pl.DataFrame, bars: Mapping[str, Sequence[BarSeries]], costs: Any) -> dict[tuple, Any]:
    """Each pick's backtest over the bars before its day, by pick key."""
    series = {(tf, s.symbol): s for tf, group in bars.items() for s in group}
    out = {}
    for pick in picks.iter_rows(named=True):
        history = series[(pick["timeframe"], pick["symbol"])]
        history = history.head(int((history.window_start < ny_midnight_ms(pick["day"])).sum()))
        out[tuple(pick[k] for k in PICK_KEY)] = backtest(history, pick["strategy"], json.loads(pick["params"]), costs)
    return out


def build_picks_asset() -> AssetsDefinition:
    @asset(
        key=PICKS_KEY,
        partitions_def=daily_partitions,
        deps=[SCORES_KEY],
        kinds={"python", "postgres", "parquet"},
        owners=OWNERS,
        group_name=RESEARCH_GROUP,
        description="The pick day's selection: the best passing rows, top-N per symbol and per risk "
        "bucket, at most max_picks, equal weights. PostgreSQL `next_day_picks` (and each pick's "
        "equity curve before its day in `pick_equity`), and the picks files the strategy runners "
        "read: <picks_dir>/date=P/next_day_picks.{parquet,yaml} and the newest day's at <picks_dir>/next_day_picks.*.",
    )
    def next_day_picks(
        context: AssetExecutionContext, research: ResearchResource, postgres: PostgresResource
    ) -> MaterializeResult:
        day = pick_day(context.partition_key)
        registry = research.registry()
        scored = read_rows(postgres, STRATEGY_SCORES, '"day" = %s', [day]).drop("day")
        picks = picks_of_scores(scored, registry, day)
        replace_rows(postgres, NEXT_DAY_PICKS, picks, '"day" = %s', [day])
        bars, _ = picks_window_bars(research, postgres, registry, day)
        curves = [
            run.equity.drop("symbol").with_columns(**{k: pl.lit(v) for k, v in zip(PICK_KEY, key, strict=True)})
            for key, run in pick_backtests(picks, bars, registry.costs.costs()).items()
        ]
        equity = pl.concat(curves) if curves else pl.DataFrame(schema=dict(PICK_EQUITY.schema))
        replace_rows(postgres, PICK_EQUITY, equity, '"day" = %s', [day])
        paths = [write_picks(picks, research.picks_path(context.partition_key, s)) for s in ("parquet", "yaml")]
        newest = max(p.name for p in Path(research.picks_dir).glob("date=*"))
        if newest == f"date={context.partition_key}":
            paths += [write_picks(picks, research.latest_picks_path(s)) for s in ("parquet", "yaml")]
        return MaterializeResult(
            metadata={
                "pick_day": str(day),
                "picks": picks.height,
                "candidates": scored.height,
                "passing": int(scored["gate"].is_null().sum()) if scored.height else 0,
                "picks_table": _markdown(picks.drop("day", "period_start", "period_end")),
                "files": [str(p) for p in paths],
            }
        )

    return next_day_picks


def scorecard_bars_span(picks: pl.DataFrame, registry: Registry, day: date) -> tuple[int, int]:
    """Golden bars for the scorecard: from the earliest pick's in-sample start to the end of ``day``."""
    first = trailing_window(picks["day"].min() if picks.height else day, registry.walk_forward.train)  # type: ignore[arg-type]
    return first.start_ms, ny_midnight_ms(day + timedelta(days=1))


def build_scorecard_asset() -> AssetsDefinition:
    @asset(
        key=SCORECARD_KEY,
        partitions_def=daily_partitions,
        deps=[PICKS_KEY],
        kinds={"python", "postgres"},
        owners=OWNERS,
        group_name=RESEARCH_GROUP,
        description="Every pick up to the pick day joined with its realized result on its own day "
        "(the strategy's book over that day's bars, indicators warmed on the history); `complete` "
        "is false while the bars do not reach past the day. PostgreSQL `picks_scorecard`.",
    )
    def picks_scorecard(
        context: AssetExecutionContext, research: ResearchResource, postgres: PostgresResource
    ) -> MaterializeResult:
        day = pick_day(context.partition_key)
        registry = research.registry()
        picks = read_rows(postgres, NEXT_DAY_PICKS, '"day" <= %s', [day])
        bars, _ = research_bars(research, postgres, registry, *scorecard_bars_span(picks, registry, day))
        card = scorecard(picks, bars, registry.costs.costs()).with_columns(as_of=pl.lit(day))
        replace_rows(postgres, PICKS_SCORECARD, card, '"day" <= %s', [day])
        done = card.filter("complete")
        by_day = done.group_by("day").agg(picks=pl.len(), portfolio_return=pl.col("weighted_return").sum()).sort("day")
        return MaterializeResult(
            metadata={
                "pick_day": str(day),
                "picks": card.height,
                "complete": done.height,
                "hit_rate": float((done["realized_return"] > 0).mean()) if done.height else 0.0,  # type: ignore[arg-type]
                "mean_portfolio_return": float(by_day["portfolio_return"].mean()) if by_day.height else 0.0,  # type: ignore[arg-type]
                "by_day": _markdown(by_day.tail(20)),
            }
        )

    return picks_scorecard
