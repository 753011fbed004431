"""Reference bars and the bar comparison: hand-checked cases, then vendor minute bars."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from tickforge.platform.bars.compare import compare_bars, emit_latency_ms
from tickforge.platform.bars.reference import (
    reference_bars,
    reference_dead_letters,
    timeframe_ms,
)

# The demo day the repository ships, and the five shared days (2013-10-10 has the flagged prints).
SAMPLE_TRADES = "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
SAMPLE_VENDOR_BARS = "us_equity_minute_bars_SPY_BAC_AIG_2013-10-08.csv.gz"
EQUITY_TRADES = "us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"
VENDOR_BARS = "us_equity_minute_bars_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"

T0 = 1_700_000_000_000  # a whole second, so T0 starts a 10 ms and a 1 s window


def trades(*rows: tuple) -> pd.DataFrame:
    """Trades from ``(ts_ms, symbol, price, size[, trade_id])`` tuples, in file order."""
    columns = ["ts_ms", "symbol", "price", "size", "trade_id"][: len(rows[0])]
    return pd.DataFrame(list(rows), columns=columns)


def dead(frame: pd.DataFrame, lateness_ms: int = 500) -> list[tuple[int, str]]:
    letters = reference_dead_letters(frame, lateness_ms)
    return list(zip(letters["row"].tolist(), letters["reason"].tolist(), strict=True))


def one_bar(frame: pd.DataFrame, timeframe: str, **kwargs: object) -> dict:
    bars = reference_bars(frame, [timeframe], **kwargs)[timeframe]  # type: ignore[arg-type]
    assert len(bars) == 1
    return bars.iloc[0].to_dict()


def test_timeframes() -> None:
    assert [timeframe_ms(t) for t in ["10ms", "1s", "1m", "3m", "5m", "15m", "1h"]] == [
        10,
        1_000,
        60_000,
        180_000,
        300_000,
        900_000,
        3_600_000,
    ]
    for bad in ["", "0s", "1d", "m", "1.5s", "-1s"]:
        with pytest.raises(ValueError):
            timeframe_ms(bad)


def test_open_close_ties_keep_input_order() -> None:
    # Two trades share the first and two share the last millisecond; a later-ms trade comes
    # first in the file. Open/close go by event time, ties by file order.
    bar = one_bar(
        trades(
            (T0 + 5, "A", 12.0, 1.0),
            (T0 + 1, "A", 10.0, 2.0),
            (T0 + 1, "A", 11.0, 1.0),
            (T0 + 9, "A", 9.0, 1.0),
            (T0 + 9, "A", 13.0, 4.0),
        ),
        "10ms",
    )
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (10.0, 13.0, 9.0, 13.0)
    assert (bar["volume"], bar["notional"], bar["trade_count"]) == (9.0, 104.0, 5)
    assert bar["vwap"] == pytest.approx(104.0 / 9.0, rel=1e-15)
    assert (bar["window_start"], bar["window_end"]) == (T0, T0 + 10)


def test_out_of_order_within_lateness_is_kept_and_late_is_rejected() -> None:
    frame = trades(
        (T0 + 900, "A", 10.0, 1.0),  # watermark 900
        (T0 + 390, "A", 11.0, 1.0),  # bin end 400 + 500 = 900 <= 900: late
        (T0 + 400, "A", 12.0, 1.0),  # bin end 410 + 500 > 900: in time, though out of order
        (T0 + 395, "B", 13.0, 1.0),  # the watermark is over all symbols: late
    )
    assert dead(frame) == [(1, "late"), (3, "late")]
    # Boundary: with 490 ms the third trade's bin end + lateness reaches the watermark exactly.
    assert dead(frame, lateness_ms=490) == [(1, "late"), (2, "late"), (3, "late")]
    assert dead(frame, lateness_ms=491) == [(1, "late"), (3, "late")]
    bar = one_bar(frame, "1s")
    assert (bar["symbol"], bar["open"], bar["close"], bar["trade_count"]) == ("A", 12.0, 10.0, 2)


def test_rejected_trades_do_not_move_the_watermark() -> None:
    frame = trades(
        (T0, "A", 10.0, 1.0, 1),
        (T0 + 5_000, "A", -1.0, 1.0, 2),  # invalid
        (T0 + 6_000, "A", 10.0, 1.0, 1),  # duplicate id
        (T0 + 10, "A", 10.0, 1.0, 3),  # would be late if either had counted
    )
    assert dead(frame) == [(1, "bad_price"), (2, "duplicate")]


def test_duplicate_ids_and_precedence() -> None:
    frame = trades(
        (T0 + 2_000, "A", 10.0, 1.0, 7),
        (T0 + 2_001, "B", 10.0, 1.0, 7),  # same id, other symbol: not a duplicate
        (T0 + 2_002, "A", 10.5, 2.0, 7),  # duplicate
        (T0 + 10, "A", 10.0, 1.0, 7),  # duplicate and late: duplicate wins
        (T0 + 10, "A", 0.0, 1.0, 7),  # invalid, duplicate and late: invalid wins
        (T0 + 2_003, "A", 10.0, 1.0, None),  # no id: never a duplicate
        (T0 + 2_003, "A", 10.0, 1.0, None),
        (None, "A", 10.0, 1.0, 9),
        (T0 + 2_004, "", 10.0, 1.0, 10),
        (T0 + 2_004, "A", 10.0, math.nan, 11),
    )
    frame["trade_id"] = frame["trade_id"].astype("Int64")
    assert dead(frame) == [
        (2, "duplicate"),
        (3, "duplicate"),
        (4, "bad_price"),
        (7, "bad_timestamp"),
        (8, "missing_symbol"),
        (9, "bad_size"),
    ]
    bars = reference_bars(frame, ["1s"])["1s"]
    assert bars[["symbol", "trade_count", "volume"]].values.tolist() == [
        ["A", 3, 3.0],
        ["B", 1, 1.0],
    ]


def test_identical_rows_without_id_are_separate_trades() -> None:
    frame = trades((T0, "A", 10.0, 100.0), (T0, "A", 10.0, 100.0))
    assert dead(frame) == []
    assert one_bar(frame, "1m")["volume"] == 200.0


def test_three_minute_bars_are_clock_aligned_from_ticks() -> None:
    start = 1_381_152_600_000  # 2013-10-07 13:30 UTC, a multiple of 3 min
    frame = trades(
        (start - 1, "A", 1.0, 1.0),  # previous 3 m window
        (start, "A", 2.0, 1.0),
        (start + 179_999, "A", 3.0, 1.0),
        (start + 180_000, "A", 4.0, 1.0),
        (start + 30 * 60_000, "A", 5.0, 1.0),  # after a gap: its own window, nothing between
    )
    bars = reference_bars(frame, ["3m"])["3m"]
    assert bars["window_start"].tolist() == [
        start - 180_000,
        start,
        start + 180_000,
        start + 30 * 60_000,
    ]
    assert (bars["window_end"] - bars["window_start"]).eq(180_000).all()
    assert bars["close"].tolist() == [1.0, 3.0, 4.0, 5.0]
    assert bars["trade_count"].tolist() == [1, 2, 1, 1]


def test_polars_input_and_row_numbers() -> None:
    frame = pl.DataFrame(
        {
            "ts_ms": [T0 + 900, T0],
            "symbol": ["A", "A"],
            "price": [1.0, 2.0],
            "size": [1.0, 1.0],
            "trade_id": [None, None],
            "row": [10, 12],  # rows kept after a reader dropped 11
        },
        schema_overrides={"trade_id": pl.Int64},
    )
    assert dead(frame.to_pandas(), lateness_ms=0) == [(12, "late")]
    assert reference_dead_letters(frame, 0)["row"].tolist() == [12]


def test_quote_features_on_one_second_bars() -> None:
    frame = trades(
        (T0 + 100, "B", 10.0, 1.0),
        (T0 + 100, "A", 10.0, 1.0),
        (T0 + 1_100, "A", 10.0, 1.0),
        (T0 + 2_100, "A", 10.0, 1.0),
        (T0 + 3_100, "A", 10.0, 1.0),
        (T0 + 4_100, "A", 10.0, 1.0),
    )
    quotes = pl.DataFrame(
        {
            "ts_ms": [T0 + 500, T0 + 999, T0 + 999, T0 + 1_000, T0 + 2_500, T0 + 3_200, T0 + 4_000],
            "symbol": ["A"] * 7,
            "bid": [1.0, 9.0, 9.98, 50.0, 10.0, 0.0, 10.0],
            "ask": [2.0, 11.0, 10.02, 60.0, 9.99, 10.0, 10.0],
            "bid_size": [1.0, 1.0, 300.0, 1.0, 1.0, 1.0, 0.0],
            "ask_size": [1.0, 1.0, 100.0, 1.0, 1.0, None, 0.0],
        }
    )
    bars = reference_bars(frame, ["1s", "10ms"], quotes=quotes)
    assert "spread_bps" not in bars["10ms"]
    one_s = bars["1s"].set_index(["symbol", "window_start"])
    a = one_s.loc["A"]
    # [T0, T0+1000): of the two quotes at T0+999 the later in the file prevails; T0+1000 is
    # not before window_end.
    assert a.loc[T0, "spread_bps"] == pytest.approx(0.04 / 10.0 * 10_000)
    assert a.loc[T0, "imbalance"] == pytest.approx(0.5)
    assert a.loc[T0 + 1_000, "spread_bps"] == pytest.approx(10 / 55 * 10_000)
    assert math.isnan(a.loc[T0 + 2_000, "spread_bps"])  # crossed: both null
    assert math.isnan(a.loc[T0 + 2_000, "imbalance"])
    assert math.isnan(a.loc[T0 + 3_000, "spread_bps"])  # zero bid
    assert a.loc[T0 + 4_000, "spread_bps"] == 0.0  # locked is usable
    assert math.isnan(a.loc[T0 + 4_000, "imbalance"])  # sizes sum to 0
    assert math.isnan(one_s.loc[("B", T0), "spread_bps"])  # no quote for B


# ----------------------------------------------------------------------------- compare


def test_compare_bars_reports_each_kind_of_difference() -> None:
    expected = reference_bars(trades((T0, "A", 10.0, 1.0), (T0, "B", 5.0, 3.0), (T0 + 1_000, "A", 11.0, 2.0)), ["1s"])[
        "1s"
    ]
    assert compare_bars(pl.from_pandas(expected), expected).ok

    actual = expected.copy()
    actual.loc[0, "vwap"] *= 1 + 1e-12  # within tolerance
    actual.loc[1, "trade_count"] = 2
    actual.loc[1, "notional"] *= 1 + 1e-6
    actual = pd.concat([actual.drop(index=2), actual.iloc[[0]]], ignore_index=True)
    actual.loc[len(actual)] = ["C", T0, T0 + 1_000, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1]
    diff = compare_bars(actual, expected)
    summary = diff.summary()
    assert not diff.ok
    assert (summary["missing"], summary["extra"], summary["duplicated"]) == (1, 1, 1)
    assert summary["differing_rows"] == 1
    assert summary["differing_fields"] == {"notional": 1, "trade_count": 1}
    assert summary["examples"]["missing"] == [{"symbol": "B", "window_start": T0}]
    assert summary["examples"]["differing"][1] == {
        "symbol": "A",
        "window_start": T0 + 1_000,
        "field": "trade_count",
        "actual": 2,
        "expected": 1,
    }
    assert compare_bars(actual.drop(columns=["vwap"]), expected).missing_columns == ("vwap",)


def test_compare_nulls_equal_nulls() -> None:
    expected = pd.DataFrame({"symbol": ["A"], "window_start": [0], "spread_bps": [math.nan]})
    actual = pl.DataFrame(
        {"symbol": ["A"], "window_start": [0], "spread_bps": [None]},
        schema_overrides={"spread_bps": pl.Float64},
    )
    assert compare_bars(actual, expected, rel_tol=0.0).ok


def test_emit_latency_percentiles() -> None:
    bars = pd.DataFrame(
        {
            "window_end": [1_000 * i for i in range(1, 102)],
            "closed_at_ms": [1_000 * i + 500 + i for i in range(1, 101)] + [None],
        }
    )
    assert emit_latency_ms(bars, lateness_ms=500) == {
        "count": 100,
        "p50": 50.5,
        "p95": pytest.approx(95.05),
        "p99": pytest.approx(99.01),
    }
    assert emit_latency_ms(bars.iloc[100:], lateness_ms=500)["p50"] is None


# ----------------------------------------------------------------------------- vendor bars


def _vendor_day(folder: Path, trades_file: str, bars_file: str, start: int, end: int):
    """Ticks (with the vendor's flag) and vendor minute bars of ``[start, end)``."""
    ticks = (
        pl.read_csv(folder / trades_file, columns=["ts_ms", "symbol", "price", "size", "suspicious"])
        .with_row_index("row")
        .filter(pl.col("ts_ms").is_between(start, end, closed="left"))
    )
    vendor = (
        pl.read_csv(folder / bars_file)
        .filter(pl.col("ts_ms").is_between(start, end, closed="left"))
        .rename({"ts_ms": "window_start"})
        .to_pandas()
    )
    return ticks, vendor


def _assert_vendor_agreement(ticks: pl.DataFrame, vendor: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The oracle knows nothing of vendor flags: the test filters. The vendor counts suspicious
    prints in volume but leaves them out of prices, so volume is checked over all ticks and
    prices over the unflagged ones. Returns the oracle bars over all and over unflagged ticks."""
    suspicious = pl.col("suspicious") == 1
    every = reference_bars(ticks.drop("suspicious"), ["1m"])["1m"]
    unflagged = reference_bars(ticks.filter(~suspicious).drop("suspicious"), ["1m"])["1m"]

    volume = compare_bars(every, vendor[["symbol", "window_start", "volume"]])
    assert volume.missing.empty and volume.extra.empty
    assert 1 - len(volume.differing) / len(vendor) > 0.99

    # Vendor filters drop some prints from prices, so vendor ranges sit inside the tick ranges.
    both = vendor.merge(unflagged, on=["symbol", "window_start"], suffixes=("_vendor", ""))
    assert len(both) == len(vendor)
    assert (both["low_vendor"] >= both["low"]).all()
    assert (both["high_vendor"] <= both["high"]).mean() > 0.999
    return every, unflagged


def test_agrees_with_vendor_minute_bars_on_the_demo_day(samples: Path) -> None:
    # 2013-10-08 04:00-20:00 ET, the sample day: no print flagged, 1,830 vendor bars.
    start, end = 1_381_219_200_000, 1_381_276_800_000
    ticks, vendor = _vendor_day(samples, SAMPLE_TRADES, SAMPLE_VENDOR_BARS, start, end)
    assert ticks.height == 620_759 and len(vendor) == 1_830
    assert ticks.filter(pl.col("suspicious") == 1).is_empty()
    _assert_vendor_agreement(ticks, vendor)


@pytest.mark.full_data
def test_agrees_with_vendor_minute_bars(shared_data: Path) -> None:
    # 2013-10-10 04:00-20:00 ET: the day with the 10 prints the vendor flags as suspicious.
    start, end = 1_381_392_000_000, 1_381_449_600_000
    ticks, vendor = _vendor_day(shared_data, EQUITY_TRADES, VENDOR_BARS, start, end)
    suspicious = pl.col("suspicious") == 1
    assert ticks.filter(suspicious).height == 10
    every, unflagged = _assert_vendor_agreement(ticks, vendor)

    key = ["symbol", "window_start"]
    flagged_minutes = ticks.filter(suspicious).select(
        "symbol", (pl.col("ts_ms") // 60_000 * 60_000).alias("window_start")
    )
    at_flags = vendor.merge(flagged_minutes.to_pandas(), on=key)
    assert len(at_flags) == 10
    assert compare_bars(every, at_flags[[*key, "volume"]]).differing.empty
    assert compare_bars(unflagged, at_flags[[*key, "low"]]).differing.empty
