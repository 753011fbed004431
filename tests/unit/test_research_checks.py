"""The research asset checks' rules on the real daily sample: they pass on honest picks and fail on
look-ahead picks, over-budget picks and equity curves that disagree with their trades."""

from __future__ import annotations

import json
from datetime import date, timedelta

import polars as pl
import pytest

from tickforge.defs.research.assets import pick_day
from tickforge.defs.research.checks import budget_violations, look_ahead_violations, position_runs, trade_mismatches
from tickforge.defs.research.resources import DAILY_BARS_SAMPLE
from tickforge.research.engine import backtest
from tickforge.research.io import load_registry, read_bars
from tickforge.research.scoring import next_day_picks, score
from tickforge.research.strategies import get_strategy
from tickforge.research.walkforward import trailing_window

DAY = date(2013, 10, 9)


@pytest.fixture(scope="module")
def daily():
    series, dead = read_bars(DAILY_BARS_SAMPLE)
    assert dead.height == 0
    return series


def test_pick_day_is_the_next_weekday():
    assert pick_day("2013-10-08") == date(2013, 10, 9)
    assert pick_day("2013-10-11") == date(2013, 10, 14)  # Friday -> Monday
    assert pick_day("2013-10-12") == date(2013, 10, 14)


def test_look_ahead_check_passes_honest_picks_and_fails_peeking_ones(daily):
    registry = load_registry()
    honest = next_day_picks({"1d": daily}, registry, DAY)
    assert honest.height and look_ahead_violations(honest, pl.DataFrame({"window_start": [0]}), DAY, "2013-10-08") == []
    # Chosen with a month of bars after their day, labelled with the day.
    peeking = next_day_picks({"1d": daily}, registry, DAY + timedelta(days=30)).with_columns(day=pl.lit(DAY))
    problems = look_ahead_violations(peeking, pl.DataFrame({"window_start": [0]}), DAY, "2013-10-08")
    assert len(problems) == peeking.height and all("must end by" in p for p in problems)
    # An equity bar of the day itself, and a partition that is not before the pick day.
    day_bar = pl.DataFrame({"window_start": [trailing_window(DAY, "1d").end_ms]})
    assert look_ahead_violations(honest, day_bar, DAY, "2013-10-08") == [
        "1 equity bars at or after 2013-10-09 in the picks' curves"
    ]
    assert look_ahead_violations(honest, day_bar.head(0), DAY, "2013-10-09")[0].startswith("pick day")


def test_budget_check_passes_selected_picks_and_fails_every_passing_row(daily):
    from tickforge.research.scoring import trailing_sweep

    registry = load_registry()
    picks = next_day_picks({"1d": daily}, registry, DAY)
    assert budget_violations(picks, registry.scoring) == []
    rows = pl.concat([trailing_sweep({"1d": daily}, registry, DAY, s) for s in registry.strategies])
    scored = score(rows, registry.scoring)
    passing = scored.filter(pl.col("gate").is_null()).with_columns(weight=pl.lit(1.0) / pl.len())
    problems = budget_violations(passing, registry.scoring)
    assert any("more than max_picks" in p for p in problems) and any("for symbol" in p for p in problems)
    failing = scored.filter(pl.col("gate").is_not_null()).head(3).with_columns(weight=pl.lit(1 / 3))
    assert any("fails its gate" in p for p in budget_violations(failing, registry.scoring))
    assert any(
        "not non-negative summing to 1" in p
        for p in budget_violations(picks.with_columns(weight=pl.lit(0.5)), registry.scoring)
    )


@pytest.mark.parametrize(
    "strategy",
    ["ema_cross", "rsi_reversion", "donchian_breakout", "macd_cross", "bollinger_reversion", "vwap_reversion"],
)
def test_trades_agree_with_their_equity_curve(daily, strategy):
    registry = load_registry()
    params = registry.grid(strategy, "1d")[len(registry.grid(strategy, "1d")) // 2]
    costs = registry.costs.costs()
    for series in daily[:4]:
        run = backtest(series, get_strategy(strategy), params, costs)
        assert run.trades.height > 0, (strategy, series.symbol, json.dumps(params))
        assert position_runs(run.equity["position"].to_numpy()) == run.trades.height
        assert trade_mismatches(run, run.equity, costs.initial_cash) == []
        # A curve that lost its last trade's bars, or its last equity, disagrees.
        last_entry = run.trades["entry_time"][-1]
        cut = run.equity.filter(pl.col("window_start") < last_entry)
        assert trade_mismatches(run, cut, costs.initial_cash)
