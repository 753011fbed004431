"""Scoring, the deflated Sharpe ratio, next-day picks and the scorecard (pure functions over frames).

Scores are robust z-scores within a cohort (strategy x timeframe x window x sample): each metric
winsorized at ``winsor`` on both tails, centred on the median and scaled by 1.4826 x MAD (0 where
the MAD is 0), bounded at +-``z_cap``, then weighted. The deflated Sharpe ratio (Bailey and Lopez de Prado, 2014) of a
candidate is the probability that its true Sharpe exceeds the expected maximum Sharpe of the N
trials run on the same symbol, timeframe and period.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import numpy as np
import polars as pl
from scipy.stats import norm

from tickforge.research.bars import BarSeries, ny_midnight_ms
from tickforge.research.engine import METRICS, Costs, empty_results, run_book, sweep
from tickforge.research.registry import Registry, Scoring
from tickforge.research.strategies import get_strategy
from tickforge.research.walkforward import trailing_window

EULER_GAMMA = 0.5772156649015329
MAD_SCALE = 1.4826  # MAD of a normal sample -> its standard deviation
COHORT = ("strategy", "timeframe", "window", "sample")
TRIALS = ("symbol", "timeframe", "window", "sample")
PICK_COLUMNS = ("symbol", "strategy", "timeframe", "params", "bucket", "weight")
PICK_SCHEMA = pl.Schema(
    {
        "day": pl.Date,
        "symbol": pl.String,
        "strategy": pl.String,
        "timeframe": pl.String,
        "params": pl.String,
        "bucket": pl.String,
        "weight": pl.Float64,
        "score": pl.Float64,
        "dsr": pl.Float64,
        "sharpe": pl.Float64,
        "total_return": pl.Float64,
        "max_drawdown": pl.Float64,
        "period_start": pl.Int64,
        "period_end": pl.Int64,
    }
)
_POSITIVE = ("total_return", "sharpe", "sortino", "win_rate", "stability")
_NEGATIVE = ("max_drawdown", "turnover")


def robust_z(values: pl.Expr, winsor: float, over: Sequence[str], cap: float | None = None) -> pl.Expr:
    """(x - median) / (1.4826 MAD) of x winsorized at ``winsor`` per tail, within ``over``; 0 if MAD = 0;
    within +-``cap`` when given (a cohort of a few near-equal rows has a tiny MAD, and the one row
    apart from them would otherwise score in the hundreds and outrank every robust cohort)."""
    lo = values.quantile(winsor, "linear").over(over)
    hi = values.quantile(1.0 - winsor, "linear").over(over)
    clipped = pl.min_horizontal(pl.max_horizontal(values, lo), hi)
    median = clipped.median().over(over)
    mad = (clipped - median).abs().median().over(over)
    z = pl.when(mad > 0).then((clipped - median) / (MAD_SCALE * mad)).otherwise(0.0)
    return z if cap is None else z.clip(-cap, cap)


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """E[max] of N Sharpe estimates with the given cross-trial variance and a true Sharpe of 0."""
    if n_trials < 2 or not variance > 0:
        return 0.0
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n_trials) + EULER_GAMMA * norm.ppf(1 - 1 / (n_trials * math.e))
    )


def deflated_sharpe(sharpe: float, threshold: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """Probability that the true per-bar Sharpe exceeds ``threshold`` (the PSR against SR0).

    ``sharpe`` and ``threshold`` are per bar (not annualized); ``kurtosis`` is the plain (not excess) one.
    """
    if n_obs < 2:
        return 0.0
    spread = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if not spread > 0:
        return 0.0
    return float(norm.cdf((sharpe - threshold) * math.sqrt(n_obs - 1) / math.sqrt(spread)))


def with_deflated_sharpe(results: pl.DataFrame) -> pl.DataFrame:
    """Adds ``n_trials``, ``sharpe_max_expected`` (per bar) and ``dsr`` to every result row.

    Trials are every row of one symbol, timeframe, window and sample (all strategies and grid points).
    """
    per_bar = pl.col("sharpe") / pl.col("bars_per_year").sqrt()
    frame = results.with_columns(
        _sr=per_bar,
        n_trials=pl.len().over(TRIALS).cast(pl.Int64),
        _var=per_bar.var(ddof=1).over(TRIALS),
    )
    sr0 = [
        expected_max_sharpe(n, v if v is not None else 0.0)
        for n, v in zip(frame["n_trials"].to_list(), frame["_var"].to_list(), strict=True)
    ]
    dsr = [
        deflated_sharpe(s, t, n, k3, k4)
        for s, t, n, k3, k4 in zip(
            frame["_sr"].to_list(),
            sr0,
            frame["n_bars"].to_list(),
            frame["skew"].to_list(),
            frame["kurtosis"].to_list(),
            strict=True,
        )
    ]
    return frame.with_columns(
        sharpe_max_expected=pl.Series(sr0, dtype=pl.Float64), dsr=pl.Series(dsr, dtype=pl.Float64)
    ).drop("_sr", "_var")


def score(results: pl.DataFrame, config: Scoring) -> pl.DataFrame:
    """Results with ``score``, ``dsr``, ``bucket`` (LOW/MED/HIGH by drawdown) and ``gate`` (null: passes)."""
    w = config.weights
    z = {m: robust_z(pl.col(m).cast(pl.Float64), config.winsor, COHORT, config.z_cap) for m in (*_POSITIVE, *_NEGATIVE)}
    total = sum((getattr(w, m) * z[m] for m in _POSITIVE), pl.lit(0.0))
    total = total - sum((getattr(w, m) * z[m] for m in _NEGATIVE), pl.lit(0.0))
    total = total - pl.when(pl.col("total_return") < 0).then(w.negative_return).otherwise(0.0)
    g, b = config.gates, config.buckets
    gate = (
        pl.when(pl.col("n_trades") < g.min_trades)
        .then(pl.lit(f"fewer than {g.min_trades} trades"))
        .when(pl.col("sharpe") < g.min_sharpe)
        .then(pl.lit(f"sharpe below {g.min_sharpe}"))
        .when(pl.col("max_drawdown") > g.max_drawdown)
        .then(pl.lit(f"drawdown above {g.max_drawdown}"))
        .when(pl.lit(g.positive_return) & (pl.col("total_return") <= 0))
        .then(pl.lit("return not positive"))
        .when(pl.col("dsr") < g.min_dsr)
        .then(pl.lit(f"deflated sharpe below {g.min_dsr}"))
    )
    bucket = (
        pl.when(pl.col("max_drawdown") <= b.low)
        .then(pl.lit("LOW"))
        .when(pl.col("max_drawdown") <= b.med)
        .then(pl.lit("MED"))
        .otherwise(pl.lit("HIGH"))
    )
    return with_deflated_sharpe(results).with_columns(score=total, bucket=bucket).with_columns(gate=gate)


def select(scored: pl.DataFrame, config: Scoring) -> pl.DataFrame:
    """The passing rows, best score first: top-N per symbol, then top-N per bucket, then ``max_picks``.

    Equal weights summing to 1. Ties break on strategy and params so a re-run picks the same rows.
    """
    ranked = scored.filter(pl.col("gate").is_null()).sort(
        ["score", "symbol", "strategy", "params"], descending=[True, False, False, False]
    )
    ranked = ranked.filter(pl.int_range(pl.len()).over("symbol") < config.top_n_per_symbol)
    ranked = ranked.filter(pl.int_range(pl.len()).over("bucket") < config.top_n_per_bucket).head(config.max_picks)
    return ranked.with_columns(weight=pl.lit(1.0 / ranked.height if ranked.height else 0.0))


def thin_history_candidates(
    scored: pl.DataFrame, config: Scoring, min_trades: int = 1, performance_gates: bool = True
) -> pl.DataFrame:
    """The rows :func:`select` would take if the evidence gates allowed a short history: at least
    ``min_trades`` trades and no deflated-Sharpe floor; the other gates (unless
    ``performance_gates`` is False: then no Sharpe floor, drawdown limit or positive return either),
    the score and the selection are unchanged.

    For a path that must trade something (a demo on one day of intraday bars), never as picks: a
    day or two of intraday history gives a strategy one or two trades, which the gates rightly
    refuse to pick on; and on a day every strategy lost, only the best-scored loser is left.
    """
    update: dict[str, object] = {"min_trades": min_trades, "min_dsr": 0.0}
    if not performance_gates:
        update |= {"min_sharpe": -math.inf, "max_drawdown": 1.0, "positive_return": False}
    thin = config.gates.model_copy(update=update)
    relaxed = config.model_copy(update={"gates": thin})
    return select(score(scored, relaxed), relaxed)


def trailing_sweep(
    bars: Mapping[str, Sequence[BarSeries]], registry: Registry, day: date, strategy: str
) -> pl.DataFrame:
    """One registry strategy swept over the in-sample window ``[day - train, day)`` (RESULT_SCHEMA).

    ``bars`` maps a timeframe to its series; every universe timeframe where the strategy has a
    grid is swept. Bars at or after ``day`` are cut off before anything is computed.
    """
    window = trailing_window(day, registry.walk_forward.train)
    cutoff = ny_midnight_ms(day)
    universe = set(registry.universe.symbols)
    frames = []
    for timeframe, series in bars.items():
        grid = registry.grid(strategy, timeframe) if timeframe in registry.universe.timeframes else []
        if not grid or (get_strategy(strategy).intraday_only and timeframe == "1d"):
            continue
        history = [
            s.head(int(np.searchsorted(s.window_start, cutoff))) for s in series if not universe or s.symbol in universe
        ]
        history = [s for s in history if len(s) >= 2]
        if history:
            frames.append(sweep(history, strategy, grid, registry.costs.costs(), [window]))
    return pl.concat(frames) if frames else empty_results()


def picks_from_sweeps(results: pl.DataFrame, registry: Registry, day: date) -> pl.DataFrame:
    """Sweep rows of the trailing window scored, gated and selected as the picks of ``day`` (PICK_SCHEMA)."""
    if results.is_empty():
        return pl.DataFrame(schema=PICK_SCHEMA)
    picks = select(score(results, registry.scoring), registry.scoring)
    return picks.with_columns(day=pl.lit(day)).select(list(PICK_SCHEMA)).cast(PICK_SCHEMA)


def next_day_picks(bars: Mapping[str, Sequence[BarSeries]], registry: Registry, day: date) -> pl.DataFrame:
    """Picks for trading day ``day`` from bars strictly before it (PICK_SCHEMA).

    ``bars`` maps a timeframe to its series. Every registry strategy, in registry order, is swept
    over the trailing in-sample window ``[day - train, day)`` (:func:`trailing_sweep`); rows are
    scored and gated, then selected.
    """
    results = pl.concat([trailing_sweep(bars, registry, day, name) for name in registry.strategies])
    return picks_from_sweeps(results, registry, day)


def walk_forward_report(results: pl.DataFrame, config: Scoring) -> pl.DataFrame:
    """For each walk-forward window: the picks chosen on its in-sample rows, with their out-of-sample metrics.

    Columns: window, symbol, strategy, timeframe, params, bucket, weight, score, dsr, the in-sample
    metrics prefixed ``is_`` and the out-of-sample metrics prefixed ``oos_``.
    """
    keys = ["window", "symbol", "strategy", "timeframe", "params"]
    in_sample = results.filter(pl.col("sample") == "in")
    chosen = [select(score(part, config), config) for part in in_sample.partition_by("window")]
    if not chosen:
        return pl.DataFrame()
    picked = pl.concat(chosen).select(
        *keys, "bucket", "weight", "score", "dsr", *(pl.col(m).alias(f"is_{m}") for m in METRICS)
    )
    outs = results.filter(pl.col("sample") == "out").select(*keys, *(pl.col(m).alias(f"oos_{m}") for m in METRICS))
    return picked.join(outs, on=keys, how="left").sort(keys)


SCORECARD_SCHEMA = pl.Schema(
    {
        **{k: PICK_SCHEMA[k] for k in ("day", *PICK_COLUMNS)},
        "realized_return": pl.Float64(),
        "realized_trades": pl.Int64(),
        "weighted_return": pl.Float64(),
        "complete": pl.Boolean(),
    }
)


def scorecard(picks: pl.DataFrame, bars: Mapping[str, Sequence[BarSeries]], costs: Costs) -> pl.DataFrame:
    """Past picks joined with their realized result on their own day (SCORECARD_SCHEMA).

    The realized result of a pick for day D is its strategy's book over D's bars alone (acting at
    D's first open on the target decided at the bar before), with the indicators warmed on the
    history. ``complete`` is false while the bars do not reach past D yet.
    """
    rows = []
    by_symbol = {(tf, s.symbol): s for tf, series in bars.items() for s in series}
    for (symbol, strategy, timeframe, params), group in picks.group_by(
        ["symbol", "strategy", "timeframe", "params"], maintain_order=True
    ):
        series = by_symbol.get((timeframe, symbol))
        if series is None:
            continue
        targets = get_strategy(strategy).targets(series, json.loads(params))
        for pick in group.iter_rows(named=True):
            start, end = ny_midnight_ms(pick["day"]), ny_midnight_ms(pick["day"] + timedelta(days=1))
            a, b = np.searchsorted(series.window_start, [start, end])
            metrics = np.zeros(len(METRICS))
            if b > a:
                run_book(
                    series.open,
                    series.close,
                    np.log(series.close),
                    series.session_last,
                    targets,
                    int(a),
                    int(b),
                    costs.initial_cash,
                    costs.fee,
                    costs.slippage,
                    series.bars_per_year,
                    metrics,
                    False,
                    np.empty(0),
                    np.empty(0, np.int8),
                    np.empty((0, 7)),
                )
            realized = float(metrics[METRICS.index("total_return")])
            rows.append(
                {
                    **{k: pick[k] for k in ("day", *PICK_COLUMNS)},
                    "realized_return": realized,
                    "realized_trades": int(metrics[METRICS.index("n_trades")]),
                    "weighted_return": realized * pick["weight"],
                    "complete": bool(b < len(series) and b > a),
                }
            )
    return pl.DataFrame(rows, schema=SCORECARD_SCHEMA).sort("day", "symbol", "strategy")


__all__ = [
    "deflated_sharpe",
    "expected_max_sharpe",
    "next_day_picks",
    "picks_from_sweeps",
    "robust_z",
    "score",
    "scorecard",
    "select",
    "trailing_sweep",
    "walk_forward_report",
    "with_deflated_sharpe",
]
