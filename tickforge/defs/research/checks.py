"""Checks of the research assets, each re-reading what its asset stored.

- ``backtest_sweep/<s>:sweep_metrics_finite`` and ``strategy_scores:scores_finite``: no NaN or
  infinite metric, score or deflated Sharpe.
- ``next_day_picks:picks_use_only_prior_bars`` (blocking): every pick's in-sample period and
  equity curve end before its day, and the day is after the partition (fails on look-ahead).
- ``next_day_picks:picks_within_budget`` (blocking): count, per-symbol and per-bucket limits,
  weights summing to 1, every pick through the registry's gates.
- ``next_day_picks:pick_trades_match_equity``: each pick's backtest has as many trades as its
  n_trades metric and as position runs in the stored equity curve, and its trades' pnl adds up
  to the curve's last equity minus the starting cash.
- ``next_day_picks:picks_reproducible``: the day's picks recomputed end to end from the bars
  (:func:`tickforge.research.scoring.next_day_picks`, a fresh sweep of every strategy) equal
  the stored ones.
- ``picks_scorecard:scorecard_covers_picks``: every pick up to the day has a scorecard row.
"""

import math
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.research.assets import (
    PICKS_KEY,
    SCORECARD_KEY,
    SCORES_KEY,
    pick_backtests,
    pick_day,
    picks_window_bars,
    sweep_key,
    sweep_object,
)
from tickforge.defs.research.resources import ResearchResource
from tickforge.defs.research.store import read_rows
from tickforge.defs.s3.resources import ObjectStoreResource
from tickforge.research.bars import ny_midnight_ms
from tickforge.research.engine import METRICS
from tickforge.research.registry import Scoring
from tickforge.research.scoring import next_day_picks
from tickforge.research.store import NEXT_DAY_PICKS, PICK_EQUITY, PICK_KEY, PICKS_SCORECARD, STRATEGY_SCORES

TOLERANCE = 1e-9


def non_finite(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, int]:
    """Per column, the rows holding NaN, an infinity or null (only columns with any)."""
    counts = {
        c: int(frame.select((~pl.col(c).cast(pl.Float64).is_finite()).fill_null(True).sum()).item())
        for c in columns
        if c in frame.columns
    }
    return {c: n for c, n in counts.items() if n}


def build_sweep_check(strategy: str) -> AssetChecksDefinition:
    @asset_check(
        asset=sweep_key(strategy),
        name="sweep_metrics_finite",
        blocking=True,
        description="No sweep row has a NaN, infinite or missing metric.",
    )
    def _check(context: AssetCheckExecutionContext, object_store: ObjectStoreResource) -> AssetCheckResult:
        results = object_store.read_parquet(object_store.archive_bucket, sweep_object(context.partition_key, strategy))
        return _finite_result(results, METRICS)

    return _check


@asset_check(
    asset=SCORES_KEY,
    name="scores_finite",
    blocking=True,
    description="Every scored row has finite metrics, score and deflated Sharpe.",
)
def scores_finite(context: AssetCheckExecutionContext, postgres: PostgresResource) -> AssetCheckResult:
    day = pick_day(context.partition_key)
    scored = read_rows(postgres, STRATEGY_SCORES, '"day" = %s', [day])
    return _finite_result(scored, (*METRICS, "score", "dsr"))


def _finite_result(frame: pl.DataFrame, columns: Sequence[str]) -> AssetCheckResult:
    """Passes when every value of ``columns`` is finite; the offending columns in the metadata."""
    bad = non_finite(frame, columns)
    return AssetCheckResult(
        passed=not bad,
        severity=AssetCheckSeverity.ERROR,
        metadata={"rows": frame.height, "non_finite": MetadataValue.json(bad)},
    )


def look_ahead_violations(picks: pl.DataFrame, equity: pl.DataFrame, day: date, partition: str) -> list[str]:
    """Reasons the picks of ``day`` may have seen bars of their day or later (empty: none)."""
    cutoff = ny_midnight_ms(day)
    problems = []
    if day.isoformat() <= partition:
        problems.append(f"pick day {day} is not after the partition {partition}")
    for row in picks.filter(
        (pl.col("period_end") > cutoff) | (pl.col("period_start") >= pl.col("period_end")) | (pl.col("day") != day)
    ).iter_rows(named=True):
        problems.append(
            f"{row['symbol']} {row['strategy']} {row['timeframe']} {row['params']}: in-sample period "
            f"[{row['period_start']}, {row['period_end']}) for day {row['day']} (must end by {cutoff})"
        )
    late = equity.filter(pl.col("window_start") >= cutoff)
    if late.height:
        problems.append(f"{late.height} equity bars at or after {day} in the picks' curves")
    return problems


@asset_check(
    asset=PICKS_KEY,
    name="picks_use_only_prior_bars",
    blocking=True,
    description="Every pick's in-sample period and equity curve end before its day (no look-ahead).",
)
def picks_use_only_prior_bars(context: AssetCheckExecutionContext, postgres: PostgresResource) -> AssetCheckResult:
    day = pick_day(context.partition_key)
    picks = read_rows(postgres, NEXT_DAY_PICKS, '"day" = %s', [day])
    equity = read_rows(postgres, PICK_EQUITY, '"day" = %s', [day])
    problems = look_ahead_violations(picks, equity, day, context.partition_key)
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "pick_day": str(day),
            "picks": picks.height,
            "cutoff_ms": ny_midnight_ms(day),
            "latest_period_end": int(picks.select(pl.col("period_end").max()).item() or 0) if picks.height else 0,
            "violations": MetadataValue.json(problems[:20]),
        },
    )


def budget_violations(picks: pl.DataFrame, config: Scoring) -> list[str]:
    """Reasons the picks break the registry's count limits, weights or gates (empty: none)."""
    problems = []
    if picks.height > config.max_picks:
        problems.append(f"{picks.height} picks, more than max_picks {config.max_picks}")
    for column, limit in (("symbol", config.top_n_per_symbol), ("bucket", config.top_n_per_bucket)):
        for value, n in picks.group_by(column).len().iter_rows():
            if n > limit:
                problems.append(f"{n} picks for {column} {value}, more than {limit}")
    weights = picks["weight"]
    if picks.height and (weights.min() < 0 or abs(weights.sum() - 1.0) > TOLERANCE):  # type: ignore[operator]
        problems.append(f"weights {weights.to_list()} are not non-negative summing to 1")
    g = config.gates
    gates = {
        "dsr": pl.col("dsr") < g.min_dsr,
        "sharpe": pl.col("sharpe") < g.min_sharpe,
        "max_drawdown": pl.col("max_drawdown") > g.max_drawdown,
        "total_return": (pl.col("total_return") <= 0) & g.positive_return,
    }
    for name, failing in gates.items():
        for row in picks.filter(failing).iter_rows(named=True):
            problems.append(f"{row['symbol']} {row['strategy']} {row['params']}: {name} {row[name]} fails its gate")
    return problems


@asset_check(
    asset=PICKS_KEY,
    name="picks_within_budget",
    blocking=True,
    description="Picks within max_picks and the per-symbol and per-bucket limits, weights summing to 1, "
    "every pick through the gates.",
)
def picks_within_budget(
    context: AssetCheckExecutionContext, research: ResearchResource, postgres: PostgresResource
) -> AssetCheckResult:
    day = pick_day(context.partition_key)
    config = research.registry().scoring
    picks = read_rows(postgres, NEXT_DAY_PICKS, '"day" = %s', [day])
    problems = budget_violations(picks, config)
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "picks": picks.height,
            "max_picks": config.max_picks,
            "weight_sum": float(picks["weight"].sum()),
            "violations": MetadataValue.json(problems[:20]),
        },
    )


def position_runs(position: np.ndarray) -> int:
    """Maximal runs of one non-zero position: the round trips an equity curve shows."""
    held = position != 0
    starts = held & np.concatenate(([True], position[1:] != position[:-1]))
    return int(starts.sum())


def trade_mismatches(run: Any, curve: pl.DataFrame, initial_cash: float) -> list[str]:
    """How one pick's backtest disagrees with its stored equity curve (empty: it agrees)."""
    out = []
    runs = position_runs(curve["position"].to_numpy())
    if not run.trades.height == run.metrics["n_trades"] == runs:
        out.append(f"{run.trades.height} trades, n_trades {run.metrics['n_trades']}, {runs} position runs")
    last = float(curve["equity"][-1]) if curve.height else initial_cash
    pnl = float(run.trades["pnl"].sum())
    if not math.isclose(last, run.metrics["final_equity"], rel_tol=TOLERANCE) or not math.isclose(
        pnl, last - initial_cash, rel_tol=TOLERANCE, abs_tol=TOLERANCE * initial_cash
    ):
        out.append(f"last equity {last}, final_equity {run.metrics['final_equity']}, pnl {pnl}")
    return out


@asset_check(
    asset=PICKS_KEY,
    name="pick_trades_match_equity",
    description="Each pick's trades agree with its stored equity curve: as many as n_trades and as "
    "position runs, pnl adding up to the last equity minus the starting cash.",
)
def pick_trades_match_equity(
    context: AssetCheckExecutionContext, research: ResearchResource, postgres: PostgresResource
) -> AssetCheckResult:
    day = pick_day(context.partition_key)
    registry = research.registry()
    picks = read_rows(postgres, NEXT_DAY_PICKS, '"day" = %s', [day])
    equity = read_rows(postgres, PICK_EQUITY, '"day" = %s', [day])
    bars, _ = picks_window_bars(research, postgres, registry, day)
    problems, trades = [], 0
    for key, run in pick_backtests(picks, bars, registry.costs.costs()).items():
        curve = equity.filter(*(pl.col(c) == v for c, v in zip(PICK_KEY, key, strict=True))).sort("window_start")
        problems += [f"{key[1:]}: {m}" for m in trade_mismatches(run, curve, registry.costs.initial_cash)]
        trades += run.trades.height
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={"picks": picks.height, "trades": trades, "mismatches": MetadataValue.json(problems[:20])},
    )


@asset_check(
    asset=PICKS_KEY,
    name="picks_reproducible",
    description="The day's picks recomputed end to end from the bars (a fresh sweep of every strategy, "
    "scoring and selection) equal the stored ones.",
)
def picks_reproducible(
    context: AssetCheckExecutionContext, research: ResearchResource, postgres: PostgresResource
) -> AssetCheckResult:
    day = pick_day(context.partition_key)
    registry = research.registry()
    stored = read_rows(postgres, NEXT_DAY_PICKS, '"day" = %s', [day])
    bars, _ = picks_window_bars(research, postgres, registry, day)
    again = next_day_picks(bars, registry, day).sort(list(PICK_KEY))
    same = stored.select(PICK_KEY).equals(again.select(PICK_KEY)) and all(
        np.allclose(stored[c].to_numpy(), again[c].to_numpy(), rtol=1e-12, atol=0) for c in ("weight", "score", "dsr")
    )
    return AssetCheckResult(
        passed=same,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "stored": stored.height,
            "recomputed": again.height,
            "recomputed_picks": MetadataValue.md(again.select(PICK_KEY[1:]).to_pandas().to_markdown(index=False))
            if again.height
            else "none",
        },
    )


@asset_check(
    asset=SCORECARD_KEY,
    name="scorecard_covers_picks",
    description="Every pick up to the pick day has exactly one scorecard row.",
)
def scorecard_covers_picks(context: AssetCheckExecutionContext, postgres: PostgresResource) -> AssetCheckResult:
    day = pick_day(context.partition_key)
    picks = read_rows(postgres, NEXT_DAY_PICKS, '"day" <= %s', [day]).select(PICK_KEY)
    card = read_rows(postgres, PICKS_SCORECARD, '"day" <= %s', [day])
    missing = picks.join(card.select(PICK_KEY), on=list(PICK_KEY), how="anti")
    return AssetCheckResult(
        passed=missing.is_empty() and card.height == picks.height,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "picks": picks.height,
            "rows": card.height,
            "missing": missing.height,
            "complete": int(card["complete"].sum()) if card.height else 0,
        },
    )


PICK_CHECKS = (picks_use_only_prior_bars, picks_within_budget, pick_trades_match_equity, picks_reproducible)
