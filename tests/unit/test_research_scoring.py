"""Metric formulas on a hand-computed case, deflated Sharpe, robust scores, walk-forward and picks without look-ahead."""

from __future__ import annotations

import json
import math
from datetime import date
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tickforge.research.bars import ny_midnight_ms
from tickforge.research.engine import METRICS, Costs, backtest, run_book, sweep
from tickforge.research.grid import expand_grid
from tickforge.research.io import load_registry, read_bars, read_picks, write_picks
from tickforge.research.registry import Scoring
from tickforge.research.scoring import (
    PICK_SCHEMA,
    deflated_sharpe,
    expected_max_sharpe,
    next_day_picks,
    robust_z,
    score,
    scorecard,
    select,
    thin_history_candidates,
    walk_forward_report,
)
from tickforge.research.strategies import STRATEGIES, get_strategy
from tickforge.research.walkforward import walk_forward_windows

DAILY_FILE = (
    Path(__file__).resolve().parents[2] / "data" / "samples" / "us_equity_daily_bars_10_symbols_1998-2021.csv.gz"
)


@pytest.fixture(scope="module")
def daily():
    series, dead = read_bars(DAILY_FILE)
    assert dead.height == 0
    return series


def test_metrics_of_a_hand_computed_four_bar_book():
    """Open 100, 110, 121, 100; close 105, 105, 110, 90; target long at bar 0, flat at bar 1.

    fee 1 % and slippage 0: buy at bar 1's open 110 with units = 1000 / (110 x 1.01); sell at bar 2's
    open 121 with fee 1 % of the proceeds.
    """
    o = np.array([100.0, 110.0, 121.0, 100.0])
    c = np.array([105.0, 105.0, 110.0, 90.0])
    targets = np.array([1, 0, 0, 0], np.int8)
    m = np.zeros(len(METRICS))
    equity, position, trades = np.empty(4), np.empty(4, np.int8), np.empty((5, 7))
    count = run_book(
        o, c, np.log(c), np.zeros(4, bool), targets, 0, 4, 1000.0, 0.01, 0.0, 252.0, m, True, equity, position, trades
    )
    units = 1000.0 / (110 * 1.01)
    cash_after_sell = units * 121 * 0.99
    expected_equity = [1000.0, units * 105, cash_after_sell, cash_after_sell]
    assert np.allclose(equity, expected_equity, rtol=1e-12)
    assert position.tolist() == [0, 1, 0, 0] and count == 1
    r = [0.0, units * 105 / 1000 - 1, cash_after_sell / (units * 105) - 1, 0.0]
    mean = sum(r) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)
    got = dict(zip(METRICS, m, strict=True))
    assert got["total_return"] == pytest.approx(cash_after_sell / 1000 - 1, rel=1e-12)
    assert got["sharpe"] == pytest.approx(mean / sd * math.sqrt(252), rel=1e-10)
    assert got["sortino"] == pytest.approx(mean / math.sqrt(r[1] ** 2 / 4) * math.sqrt(252), rel=1e-10)
    assert r[1] < 0 < r[2]
    assert got["max_drawdown"] == pytest.approx(1 - units * 105 / 1000, rel=1e-12)
    assert got["n_trades"] == 1 and got["win_rate"] == 1.0 and got["exposure"] == 0.25
    assert got["avg_holding_bars"] == 1.0
    traded = units * 110 + units * 121
    assert got["turnover"] == pytest.approx(traded / (sum(expected_equity) / 4) / (4 / 252), rel=1e-12)
    assert trades[0, 6] == pytest.approx(cash_after_sell - 1000.0, rel=1e-12)  # pnl includes both fees


def test_deflated_sharpe_against_a_hand_computed_value():
    # N = 100 trials with variance 0.0025 of their per-bar Sharpes:
    # SR0 = 0.05 x ((1 - 0.5772) x z(0.99) + 0.5772 x z(1 - 1 / (100 e))), z(0.99) = 2.32635, z(0.996321) = 2.68021
    #     = 0.05 x (0.42278 x 2.32635 + 0.57722 x 2.68021) = 0.05 x 2.53060 = 0.126530
    sr0 = expected_max_sharpe(100, 0.0025)
    assert sr0 == pytest.approx(0.126530, abs=2e-6)
    # SR = 0.2 per bar over T = 250 bars, skew -0.5, kurtosis 5:
    # z = (0.2 - 0.126530) x sqrt(249) / sqrt(1 + 0.5 x 0.2 + (5 - 1) / 4 x 0.04) = 0.073470 x 15.77973 / 1.067708
    #   = 1.085817, DSR = Phi(1.085817) = 0.86122
    assert deflated_sharpe(0.2, sr0, 250, -0.5, 5.0) == pytest.approx(0.86122, abs=2e-5)
    assert expected_max_sharpe(1, 0.01) == 0.0
    assert deflated_sharpe(0.0, 0.0, 250, 0.0, 3.0) == pytest.approx(0.5)


def test_robust_z_uses_median_and_mad_and_winsorizes_both_tails():
    values = list(range(1, 100)) + [10_000.0]  # one outlier on the top tail
    frame = pl.DataFrame({"g": ["a"] * 100, "x": [float(v) for v in values]})
    z = frame.select(robust_z(pl.col("x"), 0.02, ["g"])).to_series().to_numpy()
    clipped = np.clip(values, np.quantile(values, 0.02), np.quantile(values, 0.98))
    med = np.median(clipped)
    mad = np.median(np.abs(clipped - med))
    assert np.allclose(z, (clipped - med) / (1.4826 * mad))
    assert z[-1] == pytest.approx(z[-2])  # the outlier is clipped to the 98 % quantile's value


def test_robust_z_is_bounded_where_a_cohort_is_tiny():
    # Three near-equal Sharpes and one far apart: the MAD is tiny and the raw z in the thousands.
    frame = pl.DataFrame({"g": ["a"] * 4, "x": [1.0, 1.0001, 1.0002, -25.8]})
    raw = frame.select(robust_z(pl.col("x"), 0.0, ["g"])).to_series()
    capped = frame.select(robust_z(pl.col("x"), 0.0, ["g"], cap=3.0)).to_series()
    assert raw.abs().max() > 1_000
    assert capped.to_list() == pytest.approx(raw.clip(-3.0, 3.0).to_list())


def test_latest_decision_equals_the_backtest_target_at_every_bar(daily):
    """The live runner's call (history up to bar t, last decision) is the vectorized target at t."""
    spy = next(s for s in daily if s.symbol == "SPY")
    cases = {
        "ema_cross": {"fast": 10, "slow": 30, "allow_short": True},
        "rsi_reversion": {"period": 14},
        "donchian_breakout": {"period": 20},
        "macd_cross": {"fast": 12, "slow": 26, "signal": 9},
        "bollinger_reversion": {"period": 20},
        "vwap_reversion": {"period": 10, "band_bps": 100},
    }
    for name, params in cases.items():
        strat = get_strategy(name)
        full = strat.targets(spy, params)
        assert len(set(full[:600].tolist())) > 1, name
        for t in range(0, 600, 7):
            assert strat.latest(spy.head(t + 1), params) == full[t], (name, t)
    assert set(STRATEGIES) >= set(cases) | {"orb_breakout"}


def test_sweep_rows_equal_single_backtests_and_walk_forward_windows(daily):
    strat = get_strategy("ema_cross")
    grid = expand_grid(strat, {"fast": "5:15:5", "slow": "20,40"}, ["fast < slow"])
    results = sweep(daily, strat, grid, Costs(1, 2))
    assert results.height == len(daily) * len(grid)
    for s in daily[:3]:
        for p in grid:
            bt = backtest(s, strat, p, Costs(1, 2))
            row = results.filter((pl.col("symbol") == s.symbol) & (pl.col("params") == json.dumps(p, sort_keys=True)))
            for m in METRICS:
                assert row[m][0] == pytest.approx(bt.metrics[m], rel=1e-12, abs=1e-12), (s.symbol, p, m)
    first, last = min(int(s.window_start[0]) for s in daily), max(int(s.window_start[-1]) for s in daily)
    windows = walk_forward_windows(first, last, "3y", "1y")
    ins = [w for w in windows if w.sample == "in"]
    outs = [w for w in windows if w.sample == "out"]
    assert all(i.end_ms == o.start_ms for i, o in zip(ins, outs, strict=True))
    assert all(a.start_ms < b.start_ms for a, b in pairwise(ins))


def test_walk_forward_selection_never_reads_out_of_sample_bars(daily):
    """Replace every bar after an in-sample window's end with garbage: its picks do not change."""
    strat = get_strategy("ema_cross")
    grid = expand_grid(strat, {"fast": "5:25:10", "slow": "30:90:30"}, ["fast < slow"])
    first, last = min(int(s.window_start[0]) for s in daily), max(int(s.window_start[-1]) for s in daily)
    windows = walk_forward_windows(first, last, "3y", "1y")
    config = Scoring(
        gates={"min_trades": 1, "min_sharpe": -10, "max_drawdown": 1.0, "positive_return": False, "min_dsr": 0.0}
    )
    report = walk_forward_report(sweep(daily, strat, grid, Costs(1, 2), windows), config)
    assert report.height > 0 and report["oos_total_return"].null_count() == 0
    k = 5
    cut = next(w for w in windows if w.index == k and w.sample == "in").end_ms
    rng = np.random.default_rng(7)
    scrambled = []
    for s in daily:
        tail = s.window_start >= cut
        shuffled = {f: getattr(s, f).copy() for f in ("open", "high", "low", "close")}
        for f in shuffled:
            shuffled[f][tail] = rng.permutation(shuffled[f][tail])
        scrambled.append(type(s)(**{**s.__dict__, **shuffled}))
    again = walk_forward_report(sweep(scrambled, strat, grid, Costs(1, 2), windows), config)
    cols = ["window", "symbol", "params", "score", "is_total_return"]
    for w in range(k + 1):
        assert (
            again.filter(pl.col("window") == w).select(cols).equals(report.filter(pl.col("window") == w).select(cols))
        ), w
    assert not again.filter(pl.col("window") == k)["oos_total_return"].equals(
        report.filter(pl.col("window") == k)["oos_total_return"]
    )


def test_next_day_picks_use_bars_before_the_day_only_and_round_trip(daily, tmp_path):
    registry = load_registry()
    day = date(2015, 6, 1)
    picks = next_day_picks({"1d": daily}, registry, day)
    assert picks.schema == pl.Schema(PICK_SCHEMA)
    assert picks.height > 0 and (picks["period_end"] <= ny_midnight_ms(day)).all()
    assert picks["weight"].sum() == pytest.approx(1.0)
    assert set(picks["bucket"]) <= {"LOW", "MED", "HIGH"}
    assert picks.group_by("symbol").len()["len"].max() <= registry.scoring.top_n_per_symbol
    # bars from the day on are cut off: changing them changes nothing
    changed = [
        type(s)(**{**s.__dict__, "close": np.where(s.window_start >= ny_midnight_ms(day), 1.0, s.close)}) for s in daily
    ]
    assert next_day_picks({"1d": changed}, registry, day).equals(picks)
    for suffix in ("parquet", "yaml"):
        path = write_picks(picks, tmp_path / f"picks.{suffix}")
        back = read_picks(path)
        assert back.select("day", "symbol", "strategy", "timeframe", "params", "bucket", "weight").equals(
            picks.select("day", "symbol", "strategy", "timeframe", "params", "bucket", "weight")
        )
        assert all(isinstance(json.loads(p), dict) for p in back["params"])
    card = scorecard(picks, {"1d": daily}, registry.costs.costs())
    assert card.height == picks.height and card["complete"].all()
    assert card["weighted_return"].to_list() == pytest.approx((card["realized_return"] * card["weight"]).to_list())


def test_score_weights_gates_and_buckets(daily):
    registry = load_registry()
    strat = get_strategy("donchian_breakout")
    results = sweep(daily, strat, registry.grid("donchian_breakout", "1d"), Costs(1, 2))
    scored = score(results, registry.scoring)
    assert scored["score"].null_count() == 0 and scored["dsr"].is_between(0, 1).all()
    losers = scored.filter(pl.col("total_return") < 0)
    assert losers.height > 0 and losers["gate"].null_count() == 0  # every loser is gated (first failing gate named)
    picked = select(scored, registry.scoring)
    assert picked["gate"].null_count() == picked.height
    b = registry.scoring.buckets
    assert all((bk == "LOW") == (dd <= b.low) for bk, dd in zip(scored["bucket"], scored["max_drawdown"], strict=True))


def test_thin_history_candidates_relax_only_the_evidence_gates(daily):
    """On 60 daily bars a breakout makes a trade or two: the gates pick nothing there, the
    candidates keep every other gate."""
    registry = load_registry()
    short = [s.head(60) for s in daily]
    results = sweep(short, get_strategy("donchian_breakout"), registry.grid("donchian_breakout", "1d"), Costs(1, 2))
    g = registry.scoring.gates
    assert select(score(results, registry.scoring), registry.scoring).is_empty()
    candidates = thin_history_candidates(results, registry.scoring)
    assert candidates.height > 0 and (candidates["n_trades"] < g.min_trades).any()
    assert (candidates["n_trades"] >= 1).all() and (candidates["total_return"] > 0).all()
    assert (candidates["sharpe"] >= g.min_sharpe).all() and (candidates["max_drawdown"] <= g.max_drawdown).all()
    assert candidates["symbol"].n_unique() == candidates.height  # still top one per symbol
    assert candidates["weight"].sum() == pytest.approx(1.0)
    # Without the performance gates a loser may be a candidate too, still the best-scored per symbol.
    losers = results.filter(pl.col("total_return") < 0)
    assert thin_history_candidates(losers, registry.scoring).is_empty()
    anyway = thin_history_candidates(losers, registry.scoring, performance_gates=False)
    assert anyway.height > 0 and (anyway["total_return"] < 0).all() and anyway["symbol"].n_unique() == anyway.height
