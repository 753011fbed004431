"""Offline bars: the streaming kernel run over trade rows in file order.

``build_bars`` feeds trades in file order to one :class:`BarBuilder` per partition (one partition
unless asked to mirror a live topic's split: see :func:`tickforge.platform.topics.partition_for`),
so lateness, duplicates and windows follow exactly the rules of the live bar worker. Frames in,
frames out: reading the files and writing the bars are the IO modules' business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl

from tickforge.platform.bars.builder import BarBuilder, ClosedBars, Reject, SymbolTable
from tickforge.platform.bars.kernel import BarColumns
from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.platform.bars.validation import DEAD_LETTER_SCHEMA
from tickforge.platform.topics import partition_for

BAR_COLUMNS = [
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
QUOTE_COLUMNS = ["spread_bps", "imbalance"]
CHUNK_ROWS = 250_000


class TickRows(Protocol):
    """Parsed rows of a file and its rejected rows (what the file readers return)."""

    @property
    def data(self) -> pl.DataFrame: ...  # canonical columns and ``row``
    @property
    def dead_letters(self) -> pl.DataFrame: ...  # DEAD_LETTER_SCHEMA
    @property
    def symbols(self) -> pl.Series | None: ...  # ``data["symbol"]`` categorical, if the reader made it


# Fields of a trade the builder rejected, as its dead letter shows them.
_REJECTED_FIELDS = ("ts_ms", "symbol", "price", "size", "trade_id")


@dataclass(frozen=True)
class OfflineBars:
    bars: dict[str, pl.DataFrame]  # timeframe -> bars sorted by symbol, window_start
    dead_letters: pl.DataFrame  # DEAD_LETTER_SCHEMA: reader rejects plus duplicates and late


def build_bars(
    trades: TickRows,
    timeframes: Sequence[str],
    quotes: TickRows | None = None,
    lateness_ms: int = 500,
    partitions: int = 1,
    dedup_horizon_ms: int = 60_000,
    progress: Callable[[int], None] | None = None,
    pinned: Sequence[str] = (),
) -> OfflineBars:
    run = BarRun(
        timeframes, quotes.data if quotes is not None else None, lateness_ms, partitions, dedup_horizon_ms, pinned
    )
    data = trades.data
    # The reader's dictionary encode of the symbols, where it has one (same rows as data).
    if trades.symbols is not None and len(trades.symbols) == data.height:
        data = data.with_columns(trades.symbols)
    for i in range(0, data.height, CHUNK_ROWS):
        run.add(data.slice(i, CHUNK_ROWS))
        if progress is not None:
            progress(min(i + CHUNK_ROWS, data.height))
    return run.finish(trades.dead_letters)


class BarRun:
    """:func:`build_bars` fed piece by piece: trade rows in file order (canonical columns and
    ``row``; the symbol as text or categorical), then :meth:`finish` with the reader's dead
    letters. So bars can be built while the file is still being read, and no frame of the whole
    file is needed: the few rows the builder rejects are kept as they go by."""

    def __init__(
        self,
        timeframes: Sequence[str],
        quotes: pl.DataFrame | None = None,
        lateness_ms: int = 500,
        partitions: int = 1,
        dedup_horizon_ms: int = 60_000,
        pinned: Sequence[str] = (),
    ) -> None:
        self.partitions = partitions
        self.pinned = tuple(pinned)
        self.with_quotes = quotes is not None
        self.builders = [BarBuilder(timeframes, lateness_ms, dedup_horizon_ms) for _ in range(partitions)]
        if quotes is not None:
            _feed_quotes(self.builders, quotes, partitions, self.pinned)
        self.collected: dict[str, list[tuple[ClosedBars, list[str]]]] = {tf: [] for tf in timeframes}
        self.rejected: list[pl.DataFrame] = []  # row, code and the fields of rejected trades

    def add(self, data: pl.DataFrame) -> None:
        for start in range(0, data.height, CHUNK_ROWS):
            self._add(data.slice(start, CHUNK_ROWS))

    def _add(self, data: pl.DataFrame) -> None:
        part_col = None
        if self.partitions > 1:
            names = data["symbol"].cast(pl.String).unique(maintain_order=True).to_list()
            partition_of = {s: partition_for(s, self.partitions, self.pinned) for s in names}
            part_col = data["symbol"].cast(pl.String).replace_strict(partition_of, return_dtype=pl.Int32)
        for p, builder in enumerate(self.builders):
            frame = data if part_col is None else data.filter(part_col == p)
            if frame.is_empty():
                continue
            ids = frame["trade_id"]
            codes = builder.add_trade_columns(
                symbol_codes(frame["symbol"], builder.symbols),
                frame["ts_ms"].to_numpy(),
                frame["price"].to_numpy(),
                frame["size"].to_numpy(),
                ids.fill_null(-1).to_numpy() if ids.null_count() < frame.height else None,
            )
            bad = np.flatnonzero(codes)
            if len(bad):
                self.rejected.append(
                    frame.select(pl.col("row", *_REJECTED_FIELDS).gather(bad)).with_columns(
                        pl.col("symbol").cast(pl.String), pl.Series("code", codes[bad], pl.Int64)
                    )
                )
            self._collect(builder, builder.close())

    def _collect(self, builder: BarBuilder, closed_bars: list[ClosedBars]) -> None:
        for closed in closed_bars:
            self.collected[closed.timeframe].append((closed, builder.symbols.names))

    def finish(self, dead_letters: pl.DataFrame) -> OfflineBars:
        """The bars (every window flushed) and the dead letters: the reader's (``dead_letters``)
        and the builder's rejects, in row order."""
        for builder in self.builders:
            self._collect(builder, builder.close(flush=True))
        bars = {tf: _bars_frame(tf, parts, self.with_quotes) for tf, parts in self.collected.items()}
        return OfflineBars(bars, _dead_letters(dead_letters, self.rejected))


def symbol_codes(symbols: pl.Series, table: SymbolTable) -> np.ndarray:
    """Each row's code in ``table`` (new names are added in order of first appearance).

    A dictionary encode: the distinct names are found by hashing and each row's position among
    them is the physical code of an enum over them. Sorting millions of strings (``np.unique``)
    to find a handful of symbols cost more than the whole bar kernel. A categorical column (the
    reader's) is encoded already: its distinct physical codes map to the table's.
    """
    if symbols.dtype == pl.Categorical:
        distinct = symbols.unique(maintain_order=True)
        physical = distinct.to_physical().to_numpy().astype(np.int64)
        lookup = np.zeros(int(physical.max()) + 1 if len(physical) else 0, np.int32)
        lookup[physical] = table.codes(distinct.cast(pl.String).to_list())
        return lookup[symbols.to_physical().to_numpy()]
    names = symbols.unique(maintain_order=True)
    codes = table.codes(names.to_list())
    position = symbols.cast(pl.Enum(names)).to_physical().to_numpy()
    return codes[position]


def _feed_quotes(builders: list[BarBuilder], quotes: pl.DataFrame, partitions: int, pinned: Sequence[str]) -> None:
    for (symbol,), frame in quotes.group_by(["symbol"], maintain_order=True):
        p = partition_for(symbol, partitions, pinned)
        builders[p].add_quotes(
            symbol,
            frame["ts_ms"].to_numpy(),
            frame["bid"].fill_null(np.nan).to_numpy(),
            frame["ask"].fill_null(np.nan).to_numpy(),
            frame["bid_size"].fill_null(np.nan).to_numpy(),
            frame["ask_size"].fill_null(np.nan).to_numpy(),
        )


def _bars_frame(timeframe: str, parts: list[tuple[ClosedBars, list[str]]], with_quotes: bool) -> pl.DataFrame:
    """Closed bars as one frame sorted by (symbol, window_start).

    Sorted on integers: each part's codes become the rank of their name among all names (a
    handful), so no string is compared and the symbol column is built once, in its final order.
    """
    length = timeframe_ms(timeframe)
    quote_columns = with_quotes and timeframe == "1s"
    columns = BAR_COLUMNS + (QUOTE_COLUMNS if quote_columns else [])
    parts = [(closed, names) for closed, names in parts if len(closed.bars)]
    if not parts:
        schema = {c: pl.Float64 for c in columns} | {
            "symbol": pl.String,
            "window_start": pl.Int64,
            "window_end": pl.Int64,
            "trade_count": pl.Int64,
        }
        return pl.DataFrame(schema=schema).select(columns)
    names = sorted({name for _, part_names in parts for name in part_names})
    rank_of = {name: i for i, name in enumerate(names)}
    rank = np.concatenate(
        [np.array([rank_of[n] for n in part_names], np.int64)[closed.bars.sym] for closed, part_names in parts]
    )
    bars = BarColumns.concat([closed.bars for closed, _ in parts])
    order = np.lexsort((bars.start, rank))
    start = bars.start[order]
    volume, notional = bars.volume[order], bars.notional[order]
    frame = {
        "symbol": pl.Series(names, dtype=pl.String).gather(rank[order]),
        "window_start": start,
        "window_end": start + length,
        "open": bars.open[order],
        "high": bars.high[order],
        "low": bars.low[order],
        "close": bars.close[order],
        "volume": volume,
        "notional": notional,
        "vwap": notional / volume,
        "trade_count": bars.count[order],
    }
    if quote_columns:

        def quote_column(name: str) -> np.ndarray:
            values = [getattr(closed, name) for closed, _ in parts]
            return np.concatenate(
                [v if v is not None else np.full(len(c.bars), np.nan) for v, (c, _) in zip(values, parts, strict=True)]
            )[order]

        frame["spread_bps"] = quote_column("spread_bps")
        frame["imbalance"] = quote_column("imbalance")
    out = pl.DataFrame(frame)
    if quote_columns:
        out = out.with_columns(pl.col(QUOTE_COLUMNS).fill_nan(None))
    return out


def _dead_letters(read: pl.DataFrame, rejected: list[pl.DataFrame]) -> pl.DataFrame:
    if not rejected:
        return read
    reasons = {int(c): str(c.reason) for c in Reject}
    rows = (
        pl.concat(rejected)
        .with_columns(
            reason=pl.col("code").replace_strict(reasons, return_dtype=pl.String),
            raw=pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in _REJECTED_FIELDS], separator=","),
            detail=pl.lit("canonical fields " + ",".join(_REJECTED_FIELDS)),
        )
        .select(DEAD_LETTER_SCHEMA.names())
        .cast(DEAD_LETTER_SCHEMA)
    )
    return pl.concat([read.cast(DEAD_LETTER_SCHEMA), rows]).sort("row")
