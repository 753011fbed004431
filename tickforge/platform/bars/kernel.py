"""Vectorized folds: ticks into window partials, and partials into coarser or merged partials.

A *partial* is a bar that may still grow: it carries the event times of its open and close trades
(``first_ts``/``last_ts``) so that merging two partials of the same window applies the same rule as
folding the ticks directly: open is the trade with the smallest event time (ties: earlier input),
close the one with the largest (ties: later input). Rows of a :class:`BarColumns` are kept in input
order where the order matters, and every function here is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

I8 = np.int64
F8 = np.float64


@dataclass(frozen=True, slots=True)
class BarColumns:
    """Struct of arrays: one row per (symbol code, window) partial or final bar."""

    sym: np.ndarray  # int32 symbol codes (see SymbolTable)
    start: np.ndarray  # int64 window_start, epoch ms
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    notional: np.ndarray
    count: np.ndarray  # int64 trade_count
    first_ts: np.ndarray  # int64 event time of the open trade
    last_ts: np.ndarray  # int64 event time of the close trade

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def empty(cls) -> BarColumns:
        i, f = np.empty(0, I8), np.empty(0, F8)
        return cls(np.empty(0, np.int32), i, f, f, f, f, f, f, i, i, i)

    def take(self, index: np.ndarray | slice) -> BarColumns:
        return BarColumns(*(getattr(self, f.name)[index] for f in fields(self)))

    @staticmethod
    def concat(parts: list[BarColumns]) -> BarColumns:
        parts = [p for p in parts if len(p)]
        if not parts:
            return BarColumns.empty()
        if len(parts) == 1:
            return parts[0]
        return BarColumns(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(BarColumns)))


def fold_ticks(
    sym: int | np.ndarray,
    ts: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    timeframe_ms: int,
) -> BarColumns:
    """Fold valid trades (in input order) into per-(symbol, window) partials.

    ``sym`` is one code for a single-symbol batch (the wire's unit) or an array of codes. Output
    rows are sorted by (symbol, window_start). In-order input, the usual case, needs no sort.
    """
    n = len(ts)
    if n == 0:
        return BarColumns.empty()
    sym_col = None
    if np.ndim(sym):
        sym_col = np.asarray(sym, np.int32)
        lo, hi = int(sym_col.min()), int(sym_col.max())
        if lo == hi:
            sym, sym_col = lo, None
    if sym_col is None:
        if not np.all(ts[1:] >= ts[:-1]):
            order = np.argsort(ts, kind="stable")
            ts, price, size = ts[order], price[order], size[order]
        boundary = None
    else:
        if lo >= 0 and hi < 2**15:
            # Group by symbol, stably: one pass per code for a handful of codes, else numpy's
            # radix sort (O(n) for 16-bit keys). In-order input then needs no sort by time.
            if hi - lo < 4:
                order = np.concatenate([np.flatnonzero(sym_col == code) for code in range(lo, hi + 1)])
            else:
                order = np.argsort(sym_col.astype(np.int16), kind="stable")
            ts_grouped, sym_grouped = ts[order], sym_col[order]
            boundary = sym_grouped[1:] != sym_grouped[:-1]
            if np.any(~boundary & (ts_grouped[1:] < ts_grouped[:-1])):
                order = None
        else:
            order = None
        if order is None:
            order = np.lexsort((ts, sym_col))  # lexsort is stable: ties keep input order
            ts_grouped, sym_grouped = ts[order], sym_col[order]
            boundary = sym_grouped[1:] != sym_grouped[:-1]
        ts, price, size, sym_col = ts_grouped, price[order], size[order], sym_grouped
    # Floor division (libdivide for a scalar divisor) is several times faster than %; it floors
    # negative times too.
    window = ts // timeframe_ms * timeframe_ms
    change = window[1:] != window[:-1]
    if boundary is not None:
        change |= boundary
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    ends = np.append(starts[1:], n) - 1
    notional = price * size
    return BarColumns(
        sym=np.full(len(starts), sym, np.int32) if sym_col is None else sym_col[starts],
        start=window[starts],
        open=price[starts],
        high=np.maximum.reduceat(price, starts),
        low=np.minimum.reduceat(price, starts),
        close=price[ends],
        volume=np.add.reduceat(size, starts),
        notional=np.add.reduceat(notional, starts),
        count=np.diff(np.append(starts, n)).astype(I8),
        first_ts=ts[starts],
        last_ts=ts[ends],
    )


_KEY_SHIFT = 42  # epoch ms below 2**42 (year 2109): (symbol, window) packs into one int64 key


def _key_order(sym: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Stable order by (symbol, window_start); one int64 sort where the values allow it."""
    if len(start) and start.min() >= 0 and start.max() < 2**_KEY_SHIFT:
        return np.argsort((sym.astype(I8) << _KEY_SHIFT) | start, kind="stable")
    return np.lexsort((start, sym))


def emit_order(start: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """Order by (window_start, symbol): the order closed bars are emitted in."""
    if len(start) and start.min() >= 0 and start.max() < 2**_KEY_SHIFT and sym.max() < 2**20:
        return np.argsort((start << 20) | sym.astype(I8), kind="stable")
    return np.lexsort((sym, start))


def fold_partials(parts: BarColumns, timeframe_ms: int | None = None) -> BarColumns:
    """Merge partials (rows in input order) of the same (symbol, window) into one row each.

    With ``timeframe_ms`` the rows are first re-windowed to that coarser timeframe (a rollup:
    1 s partials into 1 m). Output rows are sorted by (symbol, window_start).
    """
    n = len(parts)
    if n == 0:
        return parts
    start = parts.start if timeframe_ms is None else parts.start - parts.start % timeframe_ms
    by_key = _key_order(parts.sym, start)
    sym, start_sorted = parts.sym[by_key], start[by_key]
    change = (start_sorted[1:] != start_sorted[:-1]) | (sym[1:] != sym[:-1])
    if n > 1 and change.all():
        # Nothing to merge (the common case for a rollup of ordered, already merged rows).
        return BarColumns(sym, start_sorted, *(getattr(parts, f.name)[by_key] for f in fields(BarColumns)[2:]))
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    counts = np.diff(np.append(starts, n))
    group = np.repeat(np.arange(len(starts)), counts)
    # The sort is stable, so rows of a group are in input order. Open: the first row holding the
    # group's smallest first_ts; close: the last row holding its largest last_ts.
    first_ts, last_ts = parts.first_ts[by_key], parts.last_ts[by_key]
    is_open = first_ts == np.repeat(np.minimum.reduceat(first_ts, starts), counts)
    open_rows = np.flatnonzero(is_open)
    open_rows = open_rows[np.concatenate(([True], group[open_rows][1:] != group[open_rows][:-1]))]
    is_close = last_ts == np.repeat(np.maximum.reduceat(last_ts, starts), counts)
    close_rows = np.flatnonzero(is_close)
    close_rows = close_rows[np.concatenate((group[close_rows][1:] != group[close_rows][:-1], [True]))]
    return BarColumns(
        sym=sym[starts],
        start=start_sorted[starts],
        open=parts.open[by_key[open_rows]],
        high=np.maximum.reduceat(parts.high[by_key], starts),
        low=np.minimum.reduceat(parts.low[by_key], starts),
        close=parts.close[by_key[close_rows]],
        volume=np.add.reduceat(parts.volume[by_key], starts),
        notional=np.add.reduceat(parts.notional[by_key], starts),
        count=np.add.reduceat(parts.count[by_key], starts),
        first_ts=first_ts[open_rows],
        last_ts=last_ts[close_rows],
    )
