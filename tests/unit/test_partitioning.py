"""Partitioning: deterministic, CRC32 by default, hot symbols pinned to partitions of their own."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from tickforge.platform.io.files import read_trades
from tickforge.platform.topics import hot_symbols, partition_for, partition_plan

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"


@pytest.fixture(scope="module")
def day_counts() -> dict[str, int]:
    return {s: int(n) for s, n in read_trades(SAMPLE).data["symbol"].value_counts().iter_rows()}


def test_without_pins_the_partition_is_crc32_mod_n():
    for symbol in ("SPY", "BAC", "AIG", "BTCUSDT-SPOT", "ETHUSD_PERP"):
        assert partition_for(symbol, 4) == zlib.crc32(symbol.encode()) % 4


def test_pinned_symbols_get_partitions_of_their_own():
    symbols = [f"S{i}" for i in range(200)]
    pinned = ("SPY", "BAC")
    assert partition_for("SPY", 6, pinned) == 0 and partition_for("BAC", 6, pinned) == 1
    others = {partition_for(s, 6, pinned) for s in symbols}
    assert others == {2, 3, 4, 5}, "every other symbol is spread over the partitions left, never a pinned one"
    with pytest.raises(ValueError):
        partition_for("AIG", 2, pinned)


def test_the_plan_of_a_real_day_shows_the_skew_and_what_pinning_does(day_counts):
    crc = partition_plan(day_counts, 4)
    assert [load.ticks for load in crc] == [0, 0, day_counts["BAC"] + day_counts["AIG"], day_counts["SPY"]]
    assert sum(load.ticks for load in crc) == sum(day_counts.values())
    assert hot_symbols(day_counts, 4) == ["SPY"], "only SPY carries more than a quarter of the day"
    pinned = partition_plan(day_counts, 4, ["SPY", "BAC"])
    assert (
        pinned[0].symbols == ("SPY",)
        and pinned[1].symbols == ("BAC",)
        and pinned[2].symbols + pinned[3].symbols == ("AIG",)
    )


def test_the_offline_build_places_symbols_as_the_pinned_topic_does():
    from tickforge.platform.bars.offline import BarRun

    trades = read_trades(SAMPLE).data.head(50_000)
    for pinned in ((), ("SPY",), ("BAC", "SPY")):
        run = BarRun(["1s"], partitions=4, pinned=pinned)
        run.add(trades)
        for symbol in ("SPY", "BAC", "AIG"):
            home = partition_for(symbol, 4, pinned)
            holders = [p for p, builder in enumerate(run.builders) if symbol in builder.symbols.names]
            assert holders == [home], f"{symbol} with pins {pinned}"


def test_the_pair_book_follows_its_legs_to_their_pinned_partitions():
    from tickforge.streaming.pair_worker import PairBook

    book = PairBook([("SPY", "BAC")], 4, 30, 10, 500, pinned=("BAC",))
    assert book.leg_partitions == {0, partition_for("SPY", 4, ("BAC",))}
    assert PairBook([("SPY", "BAC")], 4, 30, 10, 500).leg_partitions == {
        partition_for("SPY", 4),
        partition_for("BAC", 4),
    }
