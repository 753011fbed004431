"""Reference bars: an oracle over raw ticks, written apart from the streaming kernel.

A checker that re-implements the processor's own fold shares its blind spots, so this module
shares no code with the kernel and takes the other road wherever there is a choice: plain pandas
over the whole tick table, each timeframe grouped straight from ticks (never rolled up from
10 ms bins), lateness computed for all rows at once from a running maximum rather than
tick by tick. It is meant to be obviously right, not fast.

Rules (the issue text the kernel is built to):

* valid trade: timestamp present, non-empty symbol, finite price > 0, finite size > 0;
* duplicate: a (symbol, trade_id) already seen on an earlier valid row, in file order; rows
  without an id are never duplicates (identical prints are real separate trades);
* late: ``floor(ts/10)*10 + 10 + lateness_ms <= watermark``, the watermark being the largest
  ``ts`` of the valid, non-duplicate, non-late trades earlier in file order (over all symbols);
* precedence: invalid reasons, then ``duplicate``, then ``late``;
* bars over ``[window_start, window_end)`` aligned to multiples of the timeframe; open/close are
  the first/last trade by event time with ties in file order.

File order is the ``row`` column when present, else the order of the rows given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd
import polars as pl

BAR_COLUMNS: Final = [
    "symbol",
    "window_start",
    "window_end",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "notional",
    "vwap",
    "trade_count",
]
QUOTE_COLUMNS: Final = ["spread_bps", "imbalance"]
# Quote features are defined for the 1 s bars only.
QUOTE_TIMEFRAME_MS: Final = 1_000
# Lateness is judged on the 10 ms bin a tick falls in, not on the tick itself.
BIN_MS: Final = 10

_UNIT_MS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}


# The platform's defaults, written down here on their own (the oracle shares no code with the
# kernel): a trade may be at most 7 days past the watermark, a symbol at most 48 characters.
MAX_EVENT_JUMP_MS = 7 * 86_400_000
MAX_SYMBOL_LENGTH = 48


def timeframe_ms(timeframe: str) -> int:
    """``"10ms"``, ``"1s"``, ``"3m"``, ``"1h"``... to milliseconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", timeframe.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"bad timeframe {timeframe!r}: expected e.g. 10ms, 1s, 5m, 1h")
    return int(match[1]) * _UNIT_MS[match[2]]


def reference_dead_letters(trades: pd.DataFrame | pl.DataFrame, lateness_ms: int = 500) -> pd.DataFrame:
    """Rejected trades as ``row, reason`` in file order.

    Reasons: ``bad_timestamp``, ``future_timestamp``, ``missing_symbol``, ``bad_symbol``,
    ``bad_price``, ``bad_size``, ``duplicate``, ``late``.
    """
    classified = _classify(_trades_frame(trades), lateness_ms)
    rejected = classified[classified["reason"].notna()]
    return rejected[["row", "reason"]].reset_index(drop=True)


def reference_bars(
    trades: pd.DataFrame | pl.DataFrame,
    timeframes: Sequence[str],
    lateness_ms: int = 500,
    quotes: pd.DataFrame | pl.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Bars per timeframe from the accepted trades, sorted by ``symbol, window_start``.

    With ``quotes`` (canonical quote columns), the 1 s bars also get ``spread_bps`` and
    ``imbalance`` from the symbol's last quote with ``ts_ms < window_end``; NaN stands for null.
    """
    classified = _classify(_trades_frame(trades), lateness_ms)
    accepted = classified[classified["reason"].isna()]
    # Sorting by (ts, row) makes "first" and "last" mean first/last by event time with ties in
    # file order, which is the open/close rule.
    accepted = accepted.sort_values(["symbol", "ts_ms", "row"], kind="stable")
    quote_frame = None if quotes is None else _quotes_frame(quotes)
    result: dict[str, pd.DataFrame] = {}
    for timeframe in timeframes:
        bars = _aggregate(accepted, timeframe_ms(timeframe))
        if quote_frame is not None and timeframe_ms(timeframe) == QUOTE_TIMEFRAME_MS:
            bars = _with_quote_features(bars, quote_frame)
        result[timeframe] = bars
    return result


# --------------------------------------------------------------------------- input frames


def _as_pandas(frame: pd.DataFrame | pl.DataFrame) -> pd.DataFrame:
    if isinstance(frame, pl.DataFrame):
        return frame.to_pandas()
    return frame.copy()


def _int_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """An integer column as nullable Int64 (nulls stay nulls, values stay exact)."""
    if name not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="Int64")
    return frame[name].astype("Int64")


def _float_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    if name not in frame:
        return np.full(len(frame), np.nan)
    return frame[name].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _symbols(frame: pd.DataFrame) -> pd.Series:
    symbol = frame["symbol"].astype(object)
    return symbol.where(symbol.notna(), None)


def _trades_frame(trades: pd.DataFrame | pl.DataFrame) -> pd.DataFrame:
    raw = _as_pandas(trades).reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "row": _int_column(raw, "row") if "row" in raw else pd.Series(np.arange(len(raw))),
            "ts_ms": _int_column(raw, "ts_ms"),
            "symbol": _symbols(raw),
            "price": _float_column(raw, "price"),
            "size": _float_column(raw, "size"),
            "trade_id": _int_column(raw, "trade_id"),
        }
    )
    return frame.sort_values("row", kind="stable").reset_index(drop=True)


def _quotes_frame(quotes: pd.DataFrame | pl.DataFrame) -> pd.DataFrame:
    raw = _as_pandas(quotes).reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "order": raw["row"].astype("int64") if "row" in raw else np.arange(len(raw)),
            "ts_ms": _int_column(raw, "ts_ms"),
            "symbol": _symbols(raw),
            "bid": _float_column(raw, "bid"),
            "ask": _float_column(raw, "ask"),
            "bid_size": _float_column(raw, "bid_size"),
            "ask_size": _float_column(raw, "ask_size"),
        }
    )
    # A quote without time or symbol cannot be placed on any bar.
    frame = frame[frame["ts_ms"].notna() & frame["symbol"].notna()]
    frame = frame.astype({"ts_ms": "int64"})
    # Of quotes sharing a millisecond, the last one in file order is the prevailing one.
    frame = frame.sort_values(["ts_ms", "order"], kind="stable")
    return frame.drop_duplicates(["symbol", "ts_ms"], keep="last")


# --------------------------------------------------------------------------- classification


def _classify(
    frame: pd.DataFrame,
    lateness_ms: int,
    max_event_jump_ms: int = MAX_EVENT_JUMP_MS,
    max_symbol_length: int = MAX_SYMBOL_LENGTH,
) -> pd.DataFrame:
    """``frame`` (in file order) plus ``reason``: None for accepted trades."""
    price, size = frame["price"].to_numpy(), frame["size"].to_numpy()
    symbol_text = frame["symbol"].fillna("").astype(str).str.strip()
    faults = np.select(
        [
            (symbol_text == "").to_numpy(),
            (symbol_text.str.len() > max_symbol_length).to_numpy(),
            ~(np.isfinite(price) & (price > 0)),
            ~(np.isfinite(size) & (size > 0)),
        ],
        ["missing_symbol", "bad_symbol", "bad_price", "bad_size"],
        default="",
    )
    # Row by row: a trade more than the maximum jump past the watermark of the valid trades
    # before it is a future timestamp, and does not move that watermark.
    future = np.zeros(len(frame), dtype=bool)
    watermark = None
    for i, ts_ms in enumerate(frame["ts_ms"].tolist()):
        if ts_ms is pd.NA or ts_ms is None:
            continue
        if watermark is not None and ts_ms > watermark + max_event_jump_ms:
            future[i] = True
        elif faults[i] == "":
            watermark = ts_ms if watermark is None else max(watermark, ts_ms)
    invalid = np.where(frame["ts_ms"].isna().to_numpy(), "bad_timestamp", np.where(future, "future_timestamp", faults))
    valid = invalid == ""

    with_id = valid & frame["trade_id"].notna().to_numpy()
    duplicate = np.zeros(len(frame), dtype=bool)
    duplicate[with_id] = frame.loc[with_id].duplicated(["symbol", "trade_id"], keep="first")

    # A late trade never raises the watermark (its ts is below it by definition), so the running
    # max over valid non-duplicate trades equals the max over the accepted ones.
    candidate = valid & ~duplicate
    ts = frame["ts_ms"]  # nullable Int64: integer arithmetic, no float rounding near 2**53
    watermark = ts.where(candidate).cummax().ffill().shift(1)
    bin_end = ts // BIN_MS * BIN_MS + BIN_MS
    late = candidate & (bin_end + lateness_ms <= watermark).fillna(False).to_numpy(dtype=bool)

    reason = np.where(~valid, invalid, np.where(duplicate, "duplicate", np.where(late, "late", "")))
    return frame.assign(reason=pd.Series(reason, index=frame.index).replace("", None))


# --------------------------------------------------------------------------- aggregation


def _aggregate(accepted: pd.DataFrame, tf_ms: int) -> pd.DataFrame:
    ts = accepted["ts_ms"].astype("int64")
    ticks = accepted.assign(window_start=(ts // tf_ms) * tf_ms, notional=accepted["price"] * accepted["size"])
    grouped = ticks.groupby(["symbol", "window_start"], sort=True)
    bars = grouped.agg(
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("size", "sum"),
        notional=("notional", "sum"),
        trade_count=("price", "size"),
    ).reset_index()
    bars["window_start"] = bars["window_start"].astype("int64")
    bars["window_end"] = bars["window_start"] + tf_ms
    bars["vwap"] = bars["notional"] / bars["volume"]
    bars["trade_count"] = bars["trade_count"].astype("int64")
    return bars[BAR_COLUMNS]


def _with_quote_features(bars: pd.DataFrame, quotes: pd.DataFrame) -> pd.DataFrame:
    if bars.empty:
        return bars.assign(spread_bps=pd.Series(dtype="float64"), imbalance=pd.Series(dtype="float64"))
    joined = pd.merge_asof(
        bars.sort_values("window_end", kind="stable"),
        quotes[["ts_ms", "symbol", "bid", "ask", "bid_size", "ask_size"]],
        left_on="window_end",
        right_on="ts_ms",
        by="symbol",
        direction="backward",
        allow_exact_matches=False,  # the quote must be strictly before window_end
    )
    bid, ask = joined["bid"].to_numpy(), joined["ask"].to_numpy()
    bid_size, ask_size = joined["bid_size"].to_numpy(), joined["ask_size"].to_numpy()
    with np.errstate(all="ignore"):  # NaN and zero-depth cases are masked just below
        usable = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0) & (bid <= ask)
        depth = bid_size + ask_size
        spread_bps = np.where(usable, (ask - bid) / ((ask + bid) / 2) * 10_000, np.nan)
        imbalance = np.where(usable & np.isfinite(depth) & (depth != 0), (bid_size - ask_size) / depth, np.nan)
    joined = joined.assign(spread_bps=spread_bps, imbalance=imbalance)
    joined = joined.sort_values(["symbol", "window_start"], kind="stable").reset_index(drop=True)
    return joined[BAR_COLUMNS + QUOTE_COLUMNS]
