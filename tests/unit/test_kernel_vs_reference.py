"""The streaming kernel (offline run) against the independent pandas reference, on real data."""

from __future__ import annotations

import polars as pl
import pytest

from tickforge.platform.bars.compare import compare_bars
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.bars.reference import reference_bars, reference_dead_letters
from tickforge.platform.io.files import TickFile, read_quotes, read_trades

TIMEFRAMES = ["1s", "1m", "3m", "5m", "15m"]


@pytest.fixture(scope="module")
def crypto(samples):
    return read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")


def test_equity_day_with_quotes_equals_the_reference(samples):
    day = pl.col("ts_ms").is_between(1381204800000, 1381291200000, closed="left")
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz")
    trades = TickFile("trades", trades.source, trades.data.filter(day), trades.dead_letters)
    quotes = TickFile("quotes", quotes.source, quotes.data.filter(day), quotes.dead_letters)
    built = build_bars(trades, ["10ms", *TIMEFRAMES], quotes)
    expected = reference_bars(trades.data, ["10ms", *TIMEFRAMES], 500, quotes.data)
    for tf in ["10ms", *TIMEFRAMES]:
        want = expected[tf] if tf == "1s" else expected[tf].drop(columns=["spread_bps", "imbalance"], errors="ignore")
        diff = compare_bars(built.bars[tf], want, rel_tol=1e-9)
        assert diff.ok, (tf, diff.summary())
        assert diff.rows_expected > 0
    assert built.bars["1s"]["spread_bps"].null_count() < built.bars["1s"].height


@pytest.mark.parametrize("lateness_ms", [20, 100])
def test_out_of_order_crypto_late_trades_and_bars_equal_the_reference(crypto, lateness_ms):
    """Binance's file order is up to ~214 ms out of event-time order across symbols: with a
    short allowed lateness many trades are late, the same ones in both implementations."""
    built = build_bars(crypto, TIMEFRAMES, lateness_ms=lateness_ms)
    late = built.dead_letters.filter(pl.col("reason") == "late")
    expected_late = reference_dead_letters(crypto.data, lateness_ms)
    assert late.height > 100
    assert sorted(late["row"].to_list()) == sorted(expected_late.loc[expected_late["reason"] == "late", "row"].tolist())
    expected = reference_bars(crypto.data, TIMEFRAMES, lateness_ms)
    for tf in TIMEFRAMES:
        assert compare_bars(built.bars[tf], expected[tf]).ok, tf


def test_mirroring_live_partitions_changes_only_per_partition_watermarks(crypto):
    """With per-partition watermarks fewer trades are late than with one file-wide watermark."""
    one = build_bars(crypto, ["1s"], lateness_ms=20, partitions=1)
    four = build_bars(crypto, ["1s"], lateness_ms=20, partitions=4)
    assert four.dead_letters.height < one.dead_letters.height
    kept = four.bars["1s"]["trade_count"].sum() + four.dead_letters.height
    assert kept == crypto.data.height
