"""Pair statistics on aligned closes built from the real sample trades (data/samples)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from statsmodels.tsa.stattools import coint

from tickforge.platform.signals.pairs import (
    DEFAULT_CONFIG,
    PairConfig,
    PairStats,
    align_closes,
    half_life,
    pair_stats,
    pair_stats_from_bars,
    rolling_return_correlation,
)


def closing_bars(trades: pl.DataFrame, ts: str, length_ms: int) -> pl.DataFrame:
    """Last trade price per clock-aligned bar (input prep only)."""
    return (
        trades.group_by("symbol", (pl.col(ts) // length_ms * length_ms).alias("window_start"))
        .agg(close=pl.col("price").sort_by(ts).last())
        .with_columns(window_end=pl.col("window_start") + length_ms)
        .sort("symbol", "window_start")
    )


@pytest.fixture(scope="module")
def equity_minutes(samples: Path) -> pl.DataFrame:
    """1 m closes of SPY, BAC and AIG on 2013-10-08 (New York day)."""
    trades = pl.read_csv(
        samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz",
        columns=["ts_ms", "symbol", "price", "suspicious"],
        schema_overrides={"price": pl.Float64},
    )
    day = pl.from_epoch("ts_ms", "ms").dt.convert_time_zone("America/New_York").dt.date()
    return closing_bars(trades.filter((pl.col("suspicious") == 0) & (day == pl.date(2013, 10, 8))), "ts_ms", 60_000)


@pytest.fixture(scope="module")
def crypto_trades(samples: Path) -> pl.DataFrame:
    return pl.read_csv(
        samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz",
        columns=["ts_trade_ms", "symbol", "price"],
        schema_overrides={"price": pl.Float64},
    )


def test_nothing_is_published_before_min_history(equity_minutes):
    aligned = align_closes(equity_minutes, "SPY", "AIG")
    assert aligned.height > 300
    assert aligned["window_start"].is_sorted() and aligned["window_start"].n_unique() == aligned.height

    def stats(rows: int, config: PairConfig = DEFAULT_CONFIG) -> PairStats | None:
        head = aligned.head(rows)
        a, b = head["close_a"].to_numpy(), head["close_b"].to_numpy()
        return pair_stats(a, b, symbol_a="SPY", symbol_b="AIG", as_of=int(head["window_end"][-1]), config=config)

    assert stats(29) is None
    published = stats(30)
    assert published is not None and published.n_obs == 30
    assert stats(44, PairConfig(min_history=45)) is None and stats(45, PairConfig(min_history=45)) is not None
    with pytest.raises(ValueError):
        PairConfig(lookback=20, min_history=30)


def test_crypto_minutes_are_too_short_to_publish(crypto_trades):
    """Eleven minutes of Binance data: fewer than 30 aligned 1 m closes."""
    minutes = closing_bars(crypto_trades, "ts_trade_ms", 60_000)
    assert align_closes(minutes, "BTCUSDT-SPOT", "ETHUSDT-SPOT").height < 30
    assert pair_stats_from_bars(minutes, "BTCUSDT-SPOT", "ETHUSDT-SPOT") is None


@pytest.mark.parametrize(("symbol_a", "symbol_b"), [("SPY", "AIG"), ("AIG", "BAC")])
def test_stats_match_an_independent_computation(equity_minutes, symbol_a, symbol_b):
    config = PairConfig(lookback=120)
    stats = pair_stats_from_bars(equity_minutes, symbol_a, symbol_b, config)
    assert stats is not None
    window = align_closes(equity_minutes, symbol_a, symbol_b).tail(120)
    a, b = window["close_a"].to_numpy(), window["close_b"].to_numpy()
    assert (stats.symbol_a, stats.symbol_b, stats.n_obs, stats.as_of) == (
        symbol_a,
        symbol_b,
        120,
        window["window_end"][-1],
    )

    ols = sm.OLS(a, sm.add_constant(b)).fit()
    assert stats.intercept == pytest.approx(ols.params[0], rel=1e-9)
    assert stats.hedge_ratio == pytest.approx(ols.params[1], rel=1e-9)
    assert stats.return_correlation == pytest.approx(
        np.corrcoef(np.diff(np.log(a)), np.diff(np.log(b)))[0, 1], rel=1e-9
    )
    assert stats.coint_pvalue == pytest.approx(coint(a, b)[1], rel=1e-12)
    spread = ols.resid
    assert stats.spread == pytest.approx(spread[-1], rel=1e-6, abs=1e-9)
    assert stats.spread_zscore == pytest.approx((spread[-1] - spread.mean()) / spread.std(ddof=1), rel=1e-6)
    ar = sm.OLS(np.diff(spread), sm.add_constant(spread[:-1])).fit()
    phi = 1.0 + ar.params[1]
    assert 0 < phi < 1
    assert stats.half_life == pytest.approx(math.log(0.5) / math.log(phi), rel=1e-6)


def test_spot_and_perpetual_are_cointegrated(crypto_trades):
    """BTC spot against the USD-M perpetual on 1 s closes (23:54-24:00): one asset, two venues."""
    seconds = closing_bars(crypto_trades, "ts_trade_ms", 1_000)
    stats = pair_stats_from_bars(seconds, "BTCUSDT-SPOT", "BTCUSDT-PERP", PairConfig(lookback=1_000))
    assert stats is not None and stats.n_obs > 300
    assert stats.coint_pvalue < 0.01
    assert stats.return_correlation > 0.8
    assert stats.hedge_ratio == pytest.approx(1.0, abs=0.05)
    assert stats.half_life is not None and stats.half_life < 5
    unrelated = pair_stats_from_bars(seconds, "BTCUSDT-SPOT", "ETHUSD_PERP", PairConfig(lookback=1_000))
    assert unrelated is not None and unrelated.coint_pvalue > stats.coint_pvalue


def test_half_life_recovers_a_known_reversion_speed():
    """AR(1) spread with phi = 0.8: half-life ln 0.5 / ln 0.8 = 3.1 bars; a random walk has none."""
    rng = np.random.default_rng(7)
    spread = np.zeros(50_000)
    for t in range(1, len(spread)):
        spread[t] = 0.8 * spread[t - 1] + rng.normal()
    assert half_life(spread) == pytest.approx(math.log(0.5) / math.log(0.8), rel=0.05)
    trending = np.cumsum(np.abs(rng.normal(size=500)))  # drifts away, never reverts
    assert half_life(trending) is None


def test_rolling_return_correlation(equity_minutes):
    window = align_closes(equity_minutes, "SPY", "BAC")
    a, b = window["close_a"].to_numpy(), window["close_b"].to_numpy()
    rolling = rolling_return_correlation(a, b, 30)
    assert len(rolling) == len(a) and np.isnan(rolling[:30]).all() and not np.isnan(rolling[30:]).any()
    ra, rb = np.diff(np.log(a)), np.diff(np.log(b))
    for end in (30, 100, len(a) - 1):
        assert rolling[end] == pytest.approx(np.corrcoef(ra[end - 30 : end], rb[end - 30 : end])[0, 1], rel=1e-9)


def test_flat_leg_publishes_nothing(equity_minutes):
    window = align_closes(equity_minutes, "SPY", "AIG")
    a = window["close_a"].to_numpy()
    assert pair_stats(a, np.full(len(a), 47.5), symbol_a="SPY", symbol_b="FLAT", as_of=0) is None
