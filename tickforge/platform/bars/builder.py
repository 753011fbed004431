"""Stateful bar building over one ordered stream (a file, or one Kafka partition).

``BarBuilder`` takes trade and quote batches in stream order, rejects invalid, duplicate and late
trades with a reason code, folds the rest into 10 ms bins and rolls closed bins up the timeframe
chain. A window closes when the watermark passes ``window_end + lateness``; a trade whose 10 ms bin
has closed is late and never changes an emitted bar. ``RollupChain`` is the same chain fed with
bars of one timeframe instead of ticks (the timeframe worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from tickforge.platform.bars.kernel import BarColumns, emit_order, fold_partials, fold_ticks
from tickforge.platform.bars.timeframes import BIN_TIMEFRAME, rollup_parent, timeframe_ms
from tickforge.platform.bars.watermark import MAX_EVENT_JUMP_MS, NO_WATERMARK
from tickforge.platform.reasons import Reason


class Reject(IntEnum):
    """Why a trade went to the dead letter (0 = accepted)."""

    ACCEPTED = 0
    BAD_TIMESTAMP = 1
    MISSING_SYMBOL = 2
    BAD_PRICE = 3
    BAD_SIZE = 4
    DUPLICATE = 5
    LATE = 6
    FUTURE_TIMESTAMP = 7
    BAD_SYMBOL = 8

    @property
    def reason(self) -> str:
        """The dead-letter :class:`Reason` (``accepted`` for 0)."""
        return self.name.lower() if self is Reject.ACCEPTED else Reason(self.name.lower())


_NO_LIMIT = 2**62  # no bound on event time

# Symbol codes below zero are faults the decoder found, not symbols.
MISSING_SYMBOL_CODE = -1
BAD_SYMBOL_CODE = -2


class SymbolTable:
    """Symbol name <-> small int code, so kernels work on int arrays."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._codes: dict[str, int] = {}

    def code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self.names)
            self.names.append(name)
        return code

    def codes(self, names: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.code(n) for n in names), np.int32, len(names))

    def name_array(self) -> np.ndarray:
        return np.array(self.names, dtype=object)


class TradeIdDedup:
    """Trade ids seen per symbol within a horizon of event time (memory stays bounded)."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._ids: dict[int, np.ndarray] = {}  # sorted ids
        self._ts: dict[int, np.ndarray] = {}  # event time per id, same order

    def repeated(self, sym: int, ids: np.ndarray, watermark: int) -> np.ndarray:
        """True where an id was seen before: earlier in this batch, or at an event time within
        the horizon of ``watermark``. Older ids count as unseen even before they are pruned, so
        the answer depends on the stream alone, not on when pruning happened (a restarted
        worker rebuilds exactly the ids within the horizon)."""
        dup = np.zeros(len(ids), bool)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        dup[order[1:][sorted_ids[1:] == sorted_ids[:-1]]] = True
        known = self._ids.get(sym)
        if known is not None and len(known):
            pos = np.searchsorted(known, ids).clip(max=len(known) - 1)
            dup |= (known[pos] == ids) & (self._ts[sym][pos] >= watermark - self.horizon_ms)
        return dup

    def remember(self, sym: int, ids: np.ndarray, ts: np.ndarray, watermark: int) -> None:
        known_ids = self._ids.get(sym, np.empty(0, np.int64))
        known_ts = self._ts.get(sym, np.empty(0, np.int64))
        all_ids = np.concatenate((known_ids, ids))
        all_ts = np.concatenate((known_ts, ts))
        keep = all_ts >= watermark - self.horizon_ms
        all_ids, all_ts = all_ids[keep], all_ts[keep]
        order = np.argsort(all_ids, kind="stable")
        self._ids[sym], self._ts[sym] = all_ids[order], all_ts[order]


@dataclass(slots=True)
class ClosedBars:
    """Bars closed by a watermark step, for one timeframe, sorted by (window_start, symbol)."""

    timeframe: str
    bars: BarColumns
    spread_bps: np.ndarray | None = None
    imbalance: np.ndarray | None = None


class QuoteBook:
    """Recent quotes per symbol, for the as-of lookup at a 1 s bar's close."""

    def __init__(self) -> None:
        self._cols: dict[int, tuple[np.ndarray, ...]] = {}

    def add(self, sym: int, ts: np.ndarray, *values: np.ndarray) -> None:
        cols = (np.asarray(ts, np.int64), *(np.asarray(v, np.float64) for v in values))
        old = self._cols.get(sym)
        if old is not None:
            cols = tuple(np.concatenate((a, b)) for a, b in zip(old, cols, strict=True))
            if len(old[0]) and len(ts) and ts[0] < old[0][-1]:
                order = np.argsort(cols[0], kind="stable")
                cols = tuple(c[order] for c in cols)
        elif len(ts) > 1 and np.any(cols[0][1:] < cols[0][:-1]):
            order = np.argsort(cols[0], kind="stable")
            cols = tuple(c[order] for c in cols)
        self._cols[sym] = cols

    def spread_imbalance(self, sym: np.ndarray, window_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """From the last quote with ts < window_end; NaN where none, crossed or non-positive."""
        spread = np.full(len(sym), np.nan)
        imbalance = np.full(len(sym), np.nan)
        for code in np.unique(sym):
            cols = self._cols.get(int(code))
            if cols is None:
                continue
            rows = np.flatnonzero(sym == code)
            idx = np.searchsorted(cols[0], window_end[rows], side="left") - 1
            found = idx >= 0
            rows, idx = rows[found], idx[found]
            bid, ask, bid_size, ask_size = (c[idx] for c in cols[1:])
            good = (bid > 0) & (ask > 0) & (bid <= ask) & np.isfinite(bid) & np.isfinite(ask)
            mid = (bid + ask) / 2
            with np.errstate(invalid="ignore", divide="ignore"):
                spread[rows] = np.where(good, (ask - bid) / mid * 10_000, np.nan)
                depth = bid_size + ask_size
                imbalance[rows] = np.where(good & (depth > 0), (bid_size - ask_size) / depth, np.nan)
        return spread, imbalance

    def prune(self, before_ts: int) -> None:
        """Drop quotes no future lookup can use (keep the last one before ``before_ts``)."""
        for sym, cols in self._cols.items():
            cut = int(np.searchsorted(cols[0], before_ts, side="left")) - 1
            if cut > 0:
                self._cols[sym] = tuple(c[cut:] for c in cols)


@dataclass
class _Stage:
    timeframe: str
    length_ms: int
    parent: str
    open: BarColumns = field(default_factory=BarColumns.empty)

    def add(self, parts: BarColumns) -> None:
        if len(parts):
            merged = BarColumns.concat([self.open, parts])
            self.open = fold_partials(merged, self.length_ms if self.parent != self.timeframe else None)

    def close(self, watermark: int, lateness_ms: int) -> BarColumns:
        if not len(self.open):
            return self.open
        done = self.open.start + self.length_ms + lateness_ms <= watermark
        if not done.any():
            return BarColumns.empty()
        closed = self.open.take(done)
        self.open = self.open.take(~done)
        # Emit in window order across symbols: downstream relies on it (see RollupChain).
        return closed.take(emit_order(closed.start, closed.sym))


class _Chain:
    """Stages from a source timeframe up to every output timeframe, each rolled from its parent."""

    def __init__(self, source: str, outputs: Sequence[str], lateness_ms: int) -> None:
        self.source = source
        self.lateness_ms = lateness_ms
        self.outputs = list(outputs)
        levels = sorted({source, *outputs}, key=timeframe_ms)
        self.stages: list[_Stage] = []
        for tf in levels:
            parent = tf if tf == source else rollup_parent(tf, levels[: levels.index(tf)])
            self.stages.append(_Stage(tf, timeframe_ms(tf), parent))
        self.watermark = NO_WATERMARK

    def feed(self, parts: BarColumns) -> None:
        self.stages[0].add(parts)

    def close(self, watermark: int) -> dict[str, BarColumns]:
        """Close every window the watermark has passed, feeding closed rows to child stages."""
        self.watermark = max(self.watermark, watermark)
        closed: dict[str, BarColumns] = {}
        for stage in self.stages:
            if stage.timeframe != self.source:
                stage.add(closed[stage.parent])
            closed[stage.timeframe] = stage.close(self.watermark, self.lateness_ms)
        return closed

    def open_windows(self) -> int:
        return sum(len(s.open) for s in self.stages)


class BarBuilder:
    """Ticks of one ordered stream to closed bars of every configured timeframe."""

    def __init__(
        self,
        timeframes: Sequence[str],
        lateness_ms: int = 500,
        dedup_horizon_ms: int = 60_000,
        symbols: SymbolTable | None = None,
        max_event_jump_ms: int = MAX_EVENT_JUMP_MS,
        max_future_ms: int = 30_000,
        live_lag_ms: int = 10_000,
    ) -> None:
        self.timeframes = list(timeframes)
        self.lateness_ms = lateness_ms
        self.max_event_jump_ms = max_event_jump_ms
        self.max_future_ms = max_future_ms
        self.live_lag_ms = live_lag_ms
        # The jump bound holds within a session: from the first accepted trade until an explicit
        # end-of-session marker, after which a replay may go on with data of any later date.
        self._in_session = False
        self.symbols = symbols or SymbolTable()
        self.dedup = TradeIdDedup(dedup_horizon_ms)
        self.quotes = QuoteBook()
        self.has_quotes = False
        # Ticks fold into the finest requested timeframe. Lateness is always judged on the 10 ms
        # bin of a tick (arithmetic on its timestamp), so bins are built only when asked for.
        source = min(self.timeframes, key=timeframe_ms)
        if timeframe_ms(source) < timeframe_ms(BIN_TIMEFRAME):
            raise ValueError(f"timeframes finer than {BIN_TIMEFRAME} are not supported")
        outputs = [tf for tf in self.timeframes if tf != source]
        self._chain = _Chain(source, outputs, lateness_ms)
        self._source_ms = timeframe_ms(source)
        self._bin_ms = timeframe_ms(BIN_TIMEFRAME)
        self.watermark = NO_WATERMARK

    def add_trades(
        self,
        symbol: str,
        ts: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        trade_id: np.ndarray | None = None,
        arrived_ms: int | None = None,
    ) -> np.ndarray:
        """One symbol's trades in stream order (the wire's unit); see :meth:`add_trade_columns`."""
        code = self.symbols.code(symbol) if symbol else MISSING_SYMBOL_CODE
        return self.add_trade_columns(np.full(len(ts), code, np.int32), ts, price, size, trade_id, arrived_ms)

    def add_trade_columns(
        self,
        sym: np.ndarray,
        ts: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        trade_id: np.ndarray | None = None,
        arrived_ms: int | None = None,
    ) -> np.ndarray:
        """Fold trades in stream order; returns a :class:`Reject` code per row.

        ``sym`` holds symbol codes (``MISSING_SYMBOL_CODE``, ``BAD_SYMBOL_CODE`` for faults).
        ``trade_id`` may hold -1 where a row has none. ``arrived_ms`` is when the rows reached
        the platform (None offline). A ``future_timestamp`` never moves the watermark: a row
        stamped more than ``max_future_ms`` after its arrival, or, for replayed rows (stamped
        more than ``live_lag_ms`` before their arrival, or offline), more than
        ``max_event_jump_ms`` past the session's watermark before it. Live rows need no jump
        bound (their arrival bounds them), so a live feed back after a long outage goes on.
        """
        n = len(ts)
        codes = np.zeros(n, np.uint8)
        if n == 0:
            return codes
        if trade_id is None and self._in_order_and_valid(sym, ts, price, size) and self._none_future(ts, arrived_ms):
            # The usual batch: nothing to reject, and no row can be late (see the helper).
            self._chain.feed(fold_ticks(sym, ts, price, size, self._source_ms))
            self.watermark = max(self.watermark, int(ts[-1]))
            self._in_session = True
            return codes
        codes[(size <= 0) | ~np.isfinite(size)] = Reject.BAD_SIZE
        codes[(price <= 0) | ~np.isfinite(price)] = Reject.BAD_PRICE
        codes[sym == BAD_SYMBOL_CODE] = Reject.BAD_SYMBOL
        codes[sym == MISSING_SYMBOL_CODE] = Reject.MISSING_SYMBOL
        # A timestamp fault comes first, as in the reference.
        codes[self._future_rows(ts, codes == 0, arrived_ms)] = Reject.FUTURE_TIMESTAMP
        if trade_id is not None:
            self._reject_duplicates(sym, ts, trade_id, codes)
        candidates = codes == 0
        # Watermark seen by each row: the max event time of accepted rows before it (a late row
        # is below that max, so including it in the running max changes nothing).
        running = np.maximum.accumulate(np.where(candidates, ts, NO_WATERMARK))
        before = np.maximum(np.concatenate(([self.watermark], running[:-1])), self.watermark)
        bin_end = ts - ts % self._bin_ms + self._bin_ms
        late = candidates & (bin_end + self.lateness_ms <= before)
        codes[late] = Reject.LATE
        accepted = candidates & ~late
        if accepted.all():
            self._chain.feed(fold_ticks(sym, ts, price, size, self._source_ms))
        elif accepted.any():
            self._chain.feed(fold_ticks(sym[accepted], ts[accepted], price[accepted], size[accepted], self._source_ms))
        if accepted.any():
            self.watermark = max(self.watermark, int(running[-1]))
            self._in_session = True
        return codes

    def _session_watermark(self) -> int:
        return self.watermark if self._in_session else NO_WATERMARK

    def _none_future(self, ts: np.ndarray, arrived_ms: int | None) -> bool:
        """For rows in event-time order: is none of them a future timestamp? Each row's
        watermark is at least max(watermark, first row) and the last row is the latest."""
        first, last = int(ts[0]), int(ts[-1])
        if arrived_ms is not None and last > arrived_ms + self.max_future_ms:
            return False
        start = self._session_watermark()
        if start > NO_WATERMARK and first > start + self.max_event_jump_ms:
            return False
        return last <= max(start, first) + self.max_event_jump_ms

    def _future_rows(self, ts: np.ndarray, valid: np.ndarray, arrived_ms: int | None) -> np.ndarray:
        """Rows beyond the arrival bound, or replayed rows more than the maximum jump past the
        watermark before them (the max event time of the valid, not-future rows before each).

        Which rows are future depends on the watermark, which only non-future rows move: start
        with none excluded and exclude what is found until nothing changes. Each round only adds
        rows (a lower watermark flags more), and row i depends only on rows before it, so the fixed
        point is the row-by-row answer; a round or two in practice.
        """
        if arrived_ms is None:
            future = np.zeros(len(ts), bool)
            replayed = np.ones(len(ts), bool)
        else:
            future = ts > arrived_ms + self.max_future_ms
            replayed = ts < arrived_ms - self.live_lag_ms
        jump = self.max_event_jump_ms
        start = self._session_watermark()
        while True:
            running = np.maximum.accumulate(np.where(valid & ~future, ts, NO_WATERMARK))
            before = np.maximum(np.concatenate(([start], running[:-1])), start)
            limit = np.where(before > NO_WATERMARK, np.minimum(before, _NO_LIMIT - jump) + jump, _NO_LIMIT)
            found = future | (replayed & (ts > limit))
            if np.array_equal(found, future):
                return future
            future = found

    def _in_order_and_valid(self, sym: np.ndarray, ts: np.ndarray, price: np.ndarray, size: np.ndarray) -> bool:
        """Every row valid, event times non-decreasing, and the first row's bin still open.

        Then no row is late: a row's watermark is max(watermark, previous ts) <= max(watermark,
        its own ts), below its bin end + lateness unless the watermark alone passes it, and the
        first row has the earliest bin. Reductions (NaN fails every comparison) cost far less
        than the per-row checks of the general path.
        """
        first = int(ts[0])
        if first - first % self._bin_ms + self._bin_ms + self.lateness_ms <= self.watermark:
            return False
        if not (price.min() > 0 and price.max() < np.inf and size.min() > 0 and size.max() < np.inf):
            return False
        if np.ndim(sym) and sym.min() < 0:
            return False
        return bool(np.all(ts[1:] >= ts[:-1]))

    def _reject_duplicates(self, sym: np.ndarray, ts: np.ndarray, trade_id: np.ndarray, codes: np.ndarray) -> None:
        """Mark repeated trade ids (among valid rows that carry one) as duplicates."""
        has_id = (codes == 0) & (trade_id >= 0)
        for code in np.unique(sym[has_id]):
            rows = np.flatnonzero(has_id & (sym == code))
            dup = self.dedup.repeated(int(code), trade_id[rows], self.watermark)
            codes[rows[dup]] = Reject.DUPLICATE
            fresh = rows[~dup]
            self.dedup.remember(int(code), trade_id[fresh], ts[fresh], self.watermark)

    def add_quotes(
        self,
        symbol: str,
        ts: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        bid_size: np.ndarray,
        ask_size: np.ndarray,
    ) -> None:
        """Quotes do not move the watermark; they feed the as-of spread of 1 s bars."""
        if len(ts) and symbol:
            self.has_quotes = True
            self.quotes.add(self.symbols.code(symbol), ts, bid, ask, bid_size, ask_size)

    def advance_to(self, watermark: int, ends_session: bool = False) -> None:
        """An external watermark: an idle advance, or an end-of-session marker (``ends_session``:
        the next trade may start a session at any later date)."""
        self.watermark = max(self.watermark, watermark)
        if ends_session:
            self._in_session = False

    def close(self, flush: bool = False) -> list[ClosedBars]:
        """Bars the watermark has closed since the last call (all open ones with ``flush``)."""
        watermark = 2**62 if flush else self.watermark
        closed = self._chain.close(watermark)
        out = []
        for tf in self.timeframes:
            bars = closed[tf]
            result = ClosedBars(tf, bars)
            if tf == "1s" and self.has_quotes and len(bars):
                result.spread_bps, result.imbalance = self.quotes.spread_imbalance(bars.sym, bars.start + 1_000)
            out.append(result)
        if self.has_quotes and not flush and self.watermark > NO_WATERMARK:
            self.quotes.prune(self.watermark - self.lateness_ms - 1_000)
        return out

    def open_windows(self) -> int:
        return self._chain.open_windows()


class RollupChain:
    """Closed bars of one timeframe to coarser timeframes (the timeframe worker's kernel).

    Input bars must arrive as the bar builder emits them (window order per stream); the watermark
    is the upstream one, forwarded with the bars.
    """

    def __init__(self, source: str, timeframes: Sequence[str], lateness_ms: int) -> None:
        self.timeframes = [tf for tf in timeframes if timeframe_ms(tf) > timeframe_ms(source)]
        self._chain = _Chain(source, self.timeframes, lateness_ms)
        self.watermark = NO_WATERMARK

    def add(self, bars: BarColumns) -> None:
        self._chain.feed(bars)

    def advance_to(self, watermark: int) -> None:
        self.watermark = max(self.watermark, watermark)

    def close(self, flush: bool = False) -> list[ClosedBars]:
        closed = self._chain.close(2**62 if flush else self.watermark)
        return [ClosedBars(tf, closed[tf]) for tf in self.timeframes]

    def open_windows(self) -> int:
        return self._chain.open_windows()
