"""Strategy runner kernel: closed bars in, the backtest's decisions and the orders they imply out.

For every pick the runner keeps the history of its (symbol, timeframe) bars and, at each bar's
close, asks the strategy for its target with the very code the backtest runs
(``Strategy.latest`` over the history, checked and split by :func:`split_bars`). The decision
at bar t is the position wanted from bar t + 1's open, as in the engine's execution contract:
the target, except at an intraday session's last bar where it is flat (the engine closes every
book there and carries no target into the next session). So the decisions equal the backtest's
bar for bar (:mod:`tickforge.trading.parity`).

Orders. A change of decision becomes market orders decided at the bar's close
(``decision_ts_ms = window_end``) reaching the venue ``latency_ms`` later: leg 0 closes what the
book holds or has working against the new direction, leg 1 opens the new position, sized by the
``sizer`` (the risk layer's budget share of the pick) at the bar's close. Their
``client_order_id`` is derived from (strategy, symbol, params, timeframe, bar window, leg), so a
bar delivered twice (a restarted consumer) is recognised and decides nothing new.

Sessions are the research engine's (New York trading days of the bars; its ``session_last``):
the caller says whether a bar ends its session, as the engine's :class:`BarSeries` does for a
day of bars. :meth:`StrategyRunner.end_session` flattens whatever a book still holds when that
was only learnt after the last bar (leg 2 of the last bar's window).

Exposure of a book is what it holds plus what it has working: fills and closed orders
(rejected, canceled, expired) are reported back with :meth:`on_fill` / :meth:`on_order_closed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from tickforge.research.bars import DAILY, split_bars
from tickforge.research.strategies import Strategy, get_strategy
from tickforge.trading.orders import Fill, Order, Side, client_order_id, new_order
from tickforge.trading.picks import Pick

CLOSE_LEG, OPEN_LEG, SESSION_END_LEG = 0, 1, 2
_QTY_EPS = 1e-9

Sizer = Callable[[Pick, float], float]
"""Shares of a full position for a pick at a reference price (whole lots; 0: too small to trade)."""

_HISTORY_SCHEMA = {
    "symbol": pl.String,
    "window_start": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "notional": pl.Float64,
}


class BarLike(Protocol):
    """What the runner reads of a closed bar (the platform's ``Bar`` contract carries it)."""

    @property
    def symbol(self) -> str: ...
    @property
    def timeframe(self) -> str: ...
    @property
    def window_start(self) -> int: ...
    @property
    def window_end(self) -> int: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...
    @property
    def notional(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """The position a book wants from the next bar's open, decided at one bar's close."""

    book: str
    symbol: str
    timeframe: str
    window_start_ms: int
    decision_ts_ms: int
    close: float
    target: int  # -1, 0, +1
    previous: int
    session_last: bool


@dataclass(frozen=True, slots=True)
class RunnerOrder:
    """An order with the pick that caused it (the risk layer sizes budgets by bucket)."""

    order: Order
    pick: Pick
    reference_price: float  # the decision bar's close


@dataclass(slots=True)
class RunnerStep:
    decisions: list[Decision] = field(default_factory=list)
    orders: list[RunnerOrder] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # bars the history refused, with the reason


@dataclass(slots=True)
class _Book:
    pick: Pick
    strategy: Strategy
    target: int = 0
    filled: float = 0.0  # signed shares held
    working: dict[str, float] = field(default_factory=dict)  # coid -> signed remaining
    last_window: tuple[int, int] | None = None  # (window_start, window_end) of the last decided bar
    last_close: float = math.nan

    @property
    def exposure(self) -> float:
        return self.filled + sum(self.working.values())


@dataclass(slots=True)
class _History:
    rows: list[tuple] = field(default_factory=list)
    last_start: int | None = None


class StrategyRunner:
    def __init__(self, picks: Sequence[Pick], sizer: Sizer, latency_ms: int = 5) -> None:
        if not (isinstance(latency_ms, int) and latency_ms >= 0):
            raise ValueError(f"latency_ms must be an int >= 0: {latency_ms!r}")
        self.latency_ms = latency_ms
        self._sizer = sizer
        self._books: dict[str, _Book] = {}
        self._by_key: dict[tuple[str, str], list[_Book]] = {}
        for pick in picks:
            if _book_id(pick) in self._books:
                raise ValueError(f"pick {pick.book} on {pick.symbol} given twice")
            book = _Book(pick, get_strategy(pick.strategy))
            self._books[_book_id(pick)] = book
            self._by_key.setdefault((pick.symbol, pick.timeframe), []).append(book)
        self._history: dict[tuple[str, str], _History] = {k: _History() for k in self._by_key}
        self._order_book: dict[str, _Book] = {}
        self.duplicate_bars = 0

    # -------------------------------------------------------------- queries

    def keys(self) -> list[tuple[str, str]]:
        """The (symbol, timeframe) bar streams the picks need."""
        return list(self._by_key)

    def exposure(self, pick: Pick) -> float:
        return self._books[_book_id(pick)].exposure

    def held(self, pick: Pick) -> float:
        return self._books[_book_id(pick)].filled

    def session_end_floor(self) -> int | None:
        """The earliest decision time :meth:`end_session` could still stamp an order with: the
        last bar's end of the intraday books that hold or work something (None: none would
        order). A caller that promises event time downstream must not promise past it."""
        ends = [
            book.last_window[1]
            for book in self._books.values()
            if book.pick.timeframe != DAILY and book.last_window is not None and abs(book.exposure) > _QTY_EPS
        ]
        return min(ends, default=None)

    # -------------------------------------------------------------- bars

    def on_bar(self, bar: BarLike, session_last: bool) -> RunnerStep:
        """Decide on one closed bar; a bar at or before the last one of its stream is a repeat."""
        step = RunnerStep()
        key = (bar.symbol, bar.timeframe)
        history = self._history.get(key)
        if history is None:
            return step
        if history.last_start is not None and bar.window_start <= history.last_start:
            self.duplicate_bars += 1
            return step
        row = (bar.symbol, int(bar.window_start), bar.open, bar.high, bar.low, bar.close, bar.volume, bar.notional)
        history.rows.append(row)
        # the engine's own checks and split: a bar it refuses is not in the history either
        series, dead = split_bars(pl.DataFrame(history.rows, schema=_HISTORY_SCHEMA, orient="row"), bar.timeframe)
        if dead.height and dead["window_start"][-1] == bar.window_start:
            history.rows.pop()
            step.refused.append(f"{bar.symbol} {bar.timeframe} {bar.window_start}: {dead['reason'][-1]}")
            return step
        history.last_start = int(bar.window_start)
        bars = series[0]
        flatten = session_last and bar.timeframe != DAILY
        for book in self._by_key[key]:
            target = 0 if flatten else book.strategy.latest(bars, book.pick.params)
            decision = Decision(
                book.pick.book,
                bar.symbol,
                bar.timeframe,
                int(bar.window_start),
                int(bar.window_end),
                float(bar.close),
                target,
                book.target,
                flatten,
            )
            step.decisions.append(decision)
            book.last_window = (int(bar.window_start), int(bar.window_end))
            book.last_close = float(bar.close)
            if target != book.target:
                step.orders += self._rebalance(book, target, decision)
            book.target = target
        return step

    def end_session(self, symbol: str, timeframe: str) -> RunnerStep:
        """Flatten the intraday books of a stream whose session ended after its last bar."""
        step = RunnerStep()
        for book in self._by_key.get((symbol, timeframe), []):
            if timeframe == DAILY or book.last_window is None:
                continue
            book.target = 0
            exposure = book.exposure
            if abs(exposure) > _QTY_EPS:
                start, end = book.last_window
                step.orders.append(self._order(book, SESSION_END_LEG, -exposure, start, end, book.last_close))
        return step

    # -------------------------------------------------------------- feedback

    def on_fill(self, fill: Fill) -> None:
        book = self._order_book.get(fill.client_order_id)
        if book is None:
            return
        signed = fill.side.sign * fill.quantity
        book.filled += signed
        left = book.working.get(fill.client_order_id, 0.0) - signed
        if abs(left) <= _QTY_EPS * max(1.0, fill.quantity):
            book.working.pop(fill.client_order_id, None)
        else:
            book.working[fill.client_order_id] = left

    def on_order_closed(self, client_order_id: str) -> None:
        """The order was rejected, canceled or expired: its unfilled rest is no exposure."""
        book = self._order_book.get(client_order_id)
        if book is not None:
            book.working.pop(client_order_id, None)

    # -------------------------------------------------------------- internals

    def _rebalance(self, book: _Book, target: int, decision: Decision) -> list[RunnerOrder]:
        out = []
        exposure = book.exposure
        start, end = decision.window_start_ms, decision.decision_ts_ms
        if abs(exposure) > _QTY_EPS and (target == 0 or (exposure > 0) != (target > 0)):
            out.append(self._order(book, CLOSE_LEG, -exposure, start, end, decision.close))
            exposure = 0.0
        if target != 0:
            size = self._sizer(book.pick, decision.close)
            delta = target * size - exposure
            if delta * target > _QTY_EPS:
                out.append(self._order(book, OPEN_LEG, delta, start, end, decision.close))
        return out

    def _order(self, book: _Book, leg: int, signed: float, start: int, decided: int, reference: float) -> RunnerOrder:
        pick = book.pick
        coid = client_order_id(pick.strategy, pick.symbol, pick.params, pick.timeframe, start, leg)
        order = new_order(
            client_order_id=coid,
            strategy=pick.book,
            symbol=pick.symbol,
            side=Side.BUY if signed > 0 else Side.SELL,
            quantity=abs(signed),
            decision_ts_ms=decided,
            latency_ms=self.latency_ms,
        )
        book.working[coid] = signed
        self._order_book[coid] = book
        return RunnerOrder(order, pick, reference)


def _book_id(pick: Pick) -> str:
    return f"{pick.symbol}|{pick.book}"
