"""The pandera schemas the assets validate their output with, on real bars and broken copies."""

from __future__ import annotations

import pandera.errors
import polars as pl
import pytest

from tickforge.defs.lib.frames import LandedTrades, StoredBars, validated_bars
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.io.files import read_trades


@pytest.fixture(scope="module")
def bars(samples) -> pl.DataFrame:
    trades = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    return build_bars(trades, ["1m"]).bars["1m"]


def test_real_bars_pass_and_validated_bars_takes_pandas(bars):
    StoredBars.validate(bars)
    assert validated_bars(bars.to_pandas()).shape[0] == bars.height


@pytest.mark.parametrize(
    "broken",
    [
        lambda f: pl.concat([f, f.head(1)]),  # a bar twice
        lambda f: f.with_columns(high=pl.when(pl.int_range(pl.len()) == 0).then(pl.col("low") / 2).otherwise("high")),
        lambda f: f.with_columns(vwap=pl.col("high") * 2),
        lambda f: f.with_columns(volume=pl.when(pl.int_range(pl.len()) == 3).then(0.0).otherwise("volume")),
        lambda f: f.with_columns(window_end=pl.col("window_start")),
    ],
    ids=["duplicate", "high_below_low", "vwap_outside", "zero_volume", "empty_window"],
)
def test_broken_bars_fail(bars, broken):
    with pytest.raises((pandera.errors.SchemaError, pandera.errors.SchemaErrors)):
        StoredBars.validate(broken(bars), lazy=True)


def test_landed_trades_must_be_in_arrival_order():
    frame = pl.DataFrame(
        {
            "ts_ms": [1, 2, 3],
            "symbol": ["A", "A", None],
            "price": [1.0, -1.0, 2.0],
            "size": [1.0, 1.0, 1.0],
            "trade_id": [None, None, None],
            "partition": [0, 0, 1],
            "row": [0, 1, 0],
        },
        schema_overrides={"partition": pl.Int32, "trade_id": pl.Int64},
    )
    LandedTrades.validate(frame)  # invalid ticks are landed as they came: reconciliation judges them
    with pytest.raises(pandera.errors.SchemaError):
        LandedTrades.validate(frame.reverse())
