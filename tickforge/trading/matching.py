"""Paper matching engine: fills paper orders against a real quote and trade stream.

The kernel keeps, per symbol, the last quote (best bid/ask with sizes, plus depth levels where
a feed has them) and sees the trade prints. Paper orders are not in the real book, so the real
stream is never changed by them; the rules below decide what they would have got.

Event order and latency
    Orders and cancels carry the time they reach the venue (``Order.arrival_ts_ms``, the
    ``arrival_ts_ms`` of :meth:`PaperMatcher.cancel`); until then the book does not see them.
    An order or cancel arriving at ``t`` sees every market event stamped ``<= t``: it is
    processed when the first market event stamped ``> t`` comes (or on :meth:`advance_to`).
    So a cancel racing a fill is won by whichever is earlier in event time, and on a tie the
    market event (the fill) wins. Submitting an order whose arrival the stream has already
    passed processes it at once against the current book (it cannot be rewound).

Taking liquidity (aggressive orders)
    A market order, or a limit order whose price reaches the opposite best, is aggressive: it
    takes at the opposite best of the prevailing quote, at most the displayed size of that
    quote (less what other paper orders already took from the same quote). An IOC order's
    remainder is canceled at once. A DAY order's remainder waits: on each later quote it takes
    again while it is still marketable; a limit order whose price no longer reaches the
    opposite best becomes passive and joins the queue at its limit (as below).

Crossed, locked and one-sided books
    A quote with bid >= ask (locked or crossed) or with a side missing is not liquidity:
    aggressive orders never fill against it. A quote side repeated unchanged (same price and
    size) is the same displayed liquidity: what paper orders took from it is not offered again. A DAY order waits for the next two-sided quote
    with bid < ask, then is judged against that quote; an IOC order arriving at such a book is
    canceled (``no_liquidity``). Passive orders fill only from trade prints, so a crossed
    quote never fills them either.

Resting (passive) orders and queue position
    A passive order joins the FIFO queue of its price level behind the displayed size already
    there (``queue_ahead``), and behind earlier paper orders at that level. If the level is
    better than the best on its side it is a new level: nothing ahead. If the level is not
    displayed (top-of-book feed, price behind the best) the queue is unknown until the level
    is seen; then everything displayed there counts as ahead (conservative).
    - A print at the order's price first consumes the queue ahead (market shares, then earlier
      paper orders), then fills the order. While its queue is unknown, prints at its price do
      not fill it.
    - A print through its price (a sell print below a resting buy, a buy print above a resting
      sell) fills it up to the print's size, best-priced paper orders first, as maker at the
      order's limit.
    - The displayed size at the level shrinking by more than the prints there explain means
      cancels; :class:`CancelModel` says how they move the queue ahead: ``PRO_RATA`` (default,
      cancels spread evenly over the queue: ahead x new size / old size, rounded up to whole
      units unless ``MatchingConfig.whole_units`` is off) or ``FROM_BACK``
      (cancels come from behind: ahead capped at the new size). Growth joins behind.
    - The level disappearing behind a better best keeps the queue ahead; seen again, it is
      capped at the displayed size. The best moving to the worse side of the level (nobody
      displayed there any more) empties the queue ahead.
    A print is volume both ways: it can fill resting buys at or above it and resting sells at or
    below it. Aggressive orders are not filled by prints (that volume took the same quote).

Session end: :meth:`end_session` expires working DAY orders and rejects orders still in flight.
Everything is deterministic: same inputs in the same order, same outputs and fill ids.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from tickforge.trading.events import (
    CancelReason,
    CancelRejected,
    CancelRejectReason,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    RejectReason,
    VenueEvent,
)
from tickforge.trading.orders import Fill, Liquidity, Order, Side, TimeInForce, fill_id

_PRICE_SCALE = 100_000_000  # price keys in 1e-8 units: exact level identity for decimal prices
_QTY_EPS = 1e-9

_SESSION_CLOSED = "session_closed"


class QuoteLike(Protocol):
    """Top of book as the platform's ``Quote`` contract carries it (sizes may be None or NaN)."""

    @property
    def ts_ms(self) -> int: ...
    @property
    def symbol(self) -> str: ...
    @property
    def bid(self) -> float | None: ...
    @property
    def ask(self) -> float | None: ...
    @property
    def bid_size(self) -> float | None: ...
    @property
    def ask_size(self) -> float | None: ...


class TradeLike(Protocol):
    @property
    def ts_ms(self) -> int: ...
    @property
    def symbol(self) -> str: ...
    @property
    def price(self) -> float: ...
    @property
    def size(self) -> float: ...


class CancelModel(StrEnum):
    PRO_RATA = "pro_rata"
    FROM_BACK = "from_back"


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    cancel_model: CancelModel = CancelModel.PRO_RATA
    # Displayed size assumed for a quote side without a size (FX feeds); None: such a side
    # cannot be taken.
    unsized_quote_size: float | None = None
    # Pro-rata queue ahead rounded up to whole units (shares): no fractional equity fills.
    # False for venues that trade fractions (crypto).
    whole_units: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "cancel_model", CancelModel(self.cancel_model))
        if self.unsized_quote_size is not None and not (
            math.isfinite(self.unsized_quote_size) and self.unsized_quote_size > 0
        ):
            raise ValueError("unsized_quote_size must be positive and finite (or None)")


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """Where a passive order stands: market shares ahead (None: unknown) and its remainder."""

    client_order_id: str
    price: float
    ahead: float | None
    remaining: float


def price_key(price: float) -> int:
    return round(price * _PRICE_SCALE)


def _valid_price(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def _valid_size(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) and x >= 0 else None


@dataclass(slots=True, eq=False)
class _Working:
    order: Order
    key: int | None  # limit price key; None for market orders
    remaining: float
    aggressive: bool
    ahead: float | None = None  # market shares ahead at the level (passive orders only)
    fills: int = 0


@dataclass(slots=True, eq=False)
class _Level:
    key: int
    price: float
    orders: list[_Working] = field(default_factory=list)  # FIFO
    seen: float | None = None  # displayed size last seen, less prints since


@dataclass(slots=True)
class _Side:
    """The displayed best of one side of the last quote, None when absent or unusable."""

    price: float | None = None
    key: int | None = None
    size: float | None = None
    depth: dict[int, float] = field(default_factory=dict)  # behind the best, when given
    depth_end: int | None = None  # worst key the depth covers
    raw_price: float | None = None  # the quote's values as given, to spot repeats cheaply
    raw_size: float | None = None


class _Book:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bid = _Side()
        self.ask = _Side()
        self.tradable = False
        self.taken_bid = 0.0  # taken by paper sells from the current quote
        self.taken_ask = 0.0
        self.aggressive: list[_Working] = []
        self.levels: dict[Side, dict[int, _Level]] = {Side.BUY: {}, Side.SELL: {}}
        self.keys: dict[Side, list[int]] = {Side.BUY: [], Side.SELL: []}  # ascending
        self.stale: dict[Side, bool] = {Side.BUY: False, Side.SELL: False}  # prints moved a level's view

    def opposite(self, side: Side) -> _Side:
        return self.ask if side is Side.BUY else self.bid

    def own(self, side: Side) -> _Side:
        return self.bid if side is Side.BUY else self.ask

    def displayed_at(self, side: Side, key: int) -> float | None:
        """Displayed market size at ``key`` on ``side``: 0 for an empty level, None if unseen."""
        own = self.own(side)
        if own.key is None:
            return None
        better = key > own.key if side is Side.BUY else key < own.key
        if key == own.key:
            return own.size
        if better:
            return 0.0
        if key in own.depth:
            return own.depth[key]
        if own.depth_end is not None and (key > own.depth_end if side is Side.BUY else key < own.depth_end):
            return 0.0  # inside the depth the feed shows, but no size there
        return None


class PaperMatcher:
    """The paper venue for any number of symbols. Every method returns the events it caused."""

    def __init__(self, config: MatchingConfig | None = None, symbols: Sequence[str] | None = None) -> None:
        self.config = config or MatchingConfig()
        self._symbols = frozenset(symbols) if symbols is not None else None
        self._books: dict[str, _Book] = {}
        self._working: dict[str, tuple[_Book, _Working]] = {}
        self._in_flight: dict[str, Order] = {}
        self._closed: set[str] = set()
        self._controls: list[tuple[int, int, Order | str]] = []  # (arrival ts, seq, order | cancel id)
        self._seq = 0
        self.clock_ms = 0  # latest market event time seen
        self.duplicates = 0  # repeated submits recognised and ignored

    # -------------------------------------------------------------- market data

    def on_quote(
        self,
        quote: QuoteLike,
        bid_depth: Sequence[tuple[float, float]] = (),
        ask_depth: Sequence[tuple[float, float]] = (),
    ) -> list[VenueEvent]:
        """A new top of book; ``*_depth`` are the levels behind the best, best first."""
        out: list[VenueEvent] = []
        self._release_before(quote.ts_ms, out)
        self.clock_ms = max(self.clock_ms, quote.ts_ms)
        book = self._book(quote.symbol)
        # A repeated side (same price and size; real feeds repeat rows) is the same liquidity:
        # what paper orders took from it stays taken.
        bid_best, bid_depth_changed = _set_side(book.bid, quote.bid, quote.bid_size, bid_depth)
        ask_best, ask_depth_changed = _set_side(book.ask, quote.ask, quote.ask_size, ask_depth)
        if bid_best:
            book.taken_bid = 0.0
        if ask_best:
            book.taken_ask = 0.0
        book.tradable = book.bid.key is not None and book.ask.key is not None and book.bid.key < book.ask.key
        # queues move only when their side changed or prints changed what a level shows
        if book.levels[Side.BUY] and (bid_best or bid_depth_changed or book.stale[Side.BUY]):
            book.stale[Side.BUY] = False
            self._update_queues(book, Side.BUY)
        if book.levels[Side.SELL] and (ask_best or ask_depth_changed or book.stale[Side.SELL]):
            book.stale[Side.SELL] = False
            self._update_queues(book, Side.SELL)
        if book.tradable and book.aggressive:
            self._work_aggressive(book, quote.ts_ms, out)
        return out

    def on_trade(self, trade: TradeLike) -> list[VenueEvent]:
        out: list[VenueEvent] = []
        self._release_before(trade.ts_ms, out)
        self.clock_ms = max(self.clock_ms, trade.ts_ms)
        if not (_valid_price(trade.price) and trade.size is not None and math.isfinite(trade.size) and trade.size > 0):
            return out  # a bad print is no volume
        book = self._books.get(trade.symbol)
        if book is None:
            return out
        key = price_key(trade.price)
        if book.keys[Side.BUY] and book.keys[Side.BUY][-1] >= key:
            self._fill_from_print(book, Side.BUY, key, trade.size, trade.ts_ms, out)
        if book.keys[Side.SELL] and book.keys[Side.SELL][0] <= key:
            self._fill_from_print(book, Side.SELL, key, trade.size, trade.ts_ms, out)
        return out

    # -------------------------------------------------------------- order flow

    def submit(self, order: Order) -> list[VenueEvent]:
        """Send an order; it reaches the book at ``order.arrival_ts_ms``. Repeats are ignored."""
        coid = order.client_order_id
        if coid in self._working or coid in self._in_flight or coid in self._closed:
            self.duplicates += 1
            return []
        self._in_flight[coid] = order
        return self._push(order.arrival_ts_ms, order)

    def cancel(self, client_order_id: str, arrival_ts_ms: int) -> list[VenueEvent]:
        """Ask to cancel; the request reaches the book at ``arrival_ts_ms``."""
        return self._push(arrival_ts_ms, client_order_id)

    def advance_to(self, ts_ms: int) -> list[VenueEvent]:
        """Declare that no market event stamped ``<= ts_ms`` is still to come (end of input,
        an idle feed): orders and cancels arriving up to ``ts_ms`` are processed."""
        out: list[VenueEvent] = []
        self._release_before(ts_ms + 1, out)
        self.clock_ms = max(self.clock_ms, ts_ms)
        return out

    def fills(self, now_ms: int) -> list[VenueEvent]:
        """The gateway's poll (:class:`~tickforge.trading.gateway.Gateway`): on paper, fills come
        from the market stream, so this is :meth:`advance_to` (nothing stamped later is known)."""
        return self.advance_to(now_ms)

    def end_session(self, ts_ms: int) -> list[VenueEvent]:
        """Close the session at ``ts_ms``: working orders expire, orders still in flight are rejected."""
        out = self.advance_to(ts_ms)
        for coid, order in list(self._in_flight.items()):
            del self._in_flight[coid]
            self._closed.add(coid)
            out.append(OrderRejected(coid, max(ts_ms, order.arrival_ts_ms), _SESSION_CLOSED))
        self._controls = [c for c in self._controls if not isinstance(c[2], Order)]
        for coid in list(self._working):
            self._close(coid)
            out.append(OrderExpired(coid, ts_ms))
        return out

    # -------------------------------------------------------------- queries

    def queue_position(self, client_order_id: str) -> QueuePosition | None:
        """Queue position of a passive order (None if it is not resting)."""
        found = self._working.get(client_order_id)
        if found is None or found[1].aggressive:
            return None
        book, w = found
        level = book.levels[w.order.side][w.key]  # type: ignore[index]
        own_ahead = 0.0
        for other in level.orders:
            if other is w:
                break
            own_ahead += other.remaining
        ahead = None if w.ahead is None else w.ahead + own_ahead
        return QueuePosition(client_order_id, level.price, ahead, w.remaining)

    def working_orders(self) -> list[str]:
        return list(self._working)

    def is_tradable(self, symbol: str) -> bool:
        book = self._books.get(symbol)
        return book is not None and book.tradable

    # -------------------------------------------------------------- controls

    def _push(self, ts_ms: int, item: Order | str) -> list[VenueEvent]:
        self._seq += 1
        heapq.heappush(self._controls, (ts_ms, self._seq, item))
        out: list[VenueEvent] = []
        if ts_ms < self.clock_ms:  # the stream has passed its arrival: process now
            self._release_before(self.clock_ms, out)
        return out

    def _release_before(self, ts_ms: int, out: list[VenueEvent]) -> None:
        controls = self._controls
        while controls and controls[0][0] < ts_ms:
            at, _, item = heapq.heappop(controls)
            at = max(at, self.clock_ms)
            if isinstance(item, Order):
                if self._in_flight.pop(item.client_order_id, None) is not None:
                    self._arrive(item, at, out)
            else:
                self._cancel_now(item, at, out)

    def _arrive(self, order: Order, ts_ms: int, out: list[VenueEvent]) -> None:
        coid = order.client_order_id
        if self._symbols is not None and order.symbol not in self._symbols:
            self._closed.add(coid)
            out.append(OrderRejected(coid, ts_ms, RejectReason.UNKNOWN_SYMBOL))
            return
        book = self._book(order.symbol)
        out.append(OrderAccepted(coid, ts_ms))
        key = None if order.limit_price is None else price_key(order.limit_price)
        w = _Working(order, key, order.quantity, aggressive=self._marketable(book, order.side, key))
        ioc = order.time_in_force is TimeInForce.IOC
        if w.aggressive:
            if book.tradable:
                self._take(book, w, ts_ms, out)
            elif ioc:
                self._closed.add(coid)
                out.append(OrderCanceled(coid, ts_ms, CancelReason.NO_LIQUIDITY))
                return
        if w.remaining <= _QTY_EPS * order.quantity:
            self._closed.add(coid)
            return
        if ioc:
            self._closed.add(coid)
            out.append(OrderCanceled(coid, ts_ms, CancelReason.IOC_REMAINDER))
            return
        self._working[coid] = (book, w)
        if w.aggressive:
            book.aggressive.append(w)
        else:
            self._rest(book, w)

    def _cancel_now(self, coid: str, ts_ms: int, out: list[VenueEvent]) -> None:
        if coid not in self._working:
            reason = CancelRejectReason.ALREADY_CLOSED if coid in self._closed else CancelRejectReason.UNKNOWN_ORDER
            out.append(CancelRejected(coid, ts_ms, reason))
            return
        self._close(coid)
        out.append(OrderCanceled(coid, ts_ms, CancelReason.REQUESTED))

    def _close(self, coid: str) -> None:
        book, w = self._working.pop(coid)
        self._closed.add(coid)
        if w.aggressive:
            book.aggressive.remove(w)
            return
        side = w.order.side
        level = book.levels[side][w.key]  # type: ignore[index]
        level.orders.remove(w)
        if not level.orders:
            del book.levels[side][level.key]
            keys = book.keys[side]
            del keys[bisect_left(keys, level.key)]

    # -------------------------------------------------------------- taking

    @staticmethod
    def _marketable(book: _Book, side: Side, key: int | None) -> bool:
        if key is None:
            return True
        best = book.opposite(side).key
        if best is None:
            return False
        return key >= best if side is Side.BUY else key <= best

    def _take(self, book: _Book, w: _Working, ts_ms: int, out: list[VenueEvent]) -> None:
        side = w.order.side
        opposite = book.opposite(side)
        shown = opposite.size if opposite.size is not None else self.config.unsized_quote_size
        if shown is None or opposite.price is None:
            return
        taken = book.taken_ask if side is Side.BUY else book.taken_bid
        quantity = min(w.remaining, shown - taken)
        if quantity <= 0:
            return
        if side is Side.BUY:
            book.taken_ask += quantity
        else:
            book.taken_bid += quantity
        self._emit_fill(w, ts_ms, opposite.price, quantity, Liquidity.TAKER, out)

    def _work_aggressive(self, book: _Book, ts_ms: int, out: list[VenueEvent]) -> None:
        for w in list(book.aggressive):
            if not self._marketable(book, w.order.side, w.key):
                book.aggressive.remove(w)
                w.aggressive = False
                self._rest(book, w)
                continue
            self._take(book, w, ts_ms, out)
            if w.remaining <= _QTY_EPS * w.order.quantity:
                self._working.pop(w.order.client_order_id)
                self._closed.add(w.order.client_order_id)
                book.aggressive.remove(w)

    # -------------------------------------------------------------- resting

    def _rest(self, book: _Book, w: _Working) -> None:
        side = w.order.side
        assert w.key is not None and w.order.limit_price is not None
        levels = book.levels[side]
        level = levels.get(w.key)
        if level is None:
            shown = book.displayed_at(side, w.key)
            level = levels[w.key] = _Level(w.key, w.order.limit_price, seen=shown)
            insort(book.keys[side], w.key)
        # the level's view is the last displayed size less the prints there since
        w.ahead = level.seen
        level.orders.append(w)

    def _update_queues(self, book: _Book, side: Side) -> None:
        pro_rata = self.config.cancel_model is CancelModel.PRO_RATA
        whole = self.config.whole_units
        own = book.own(side)
        best = own.key
        buy = side is Side.BUY
        for level in book.levels[side].values():
            key = level.key
            # displayed_at inlined: this loop runs for every level on every quote
            if best is None:
                shown = None
            elif key == best:
                shown = own.size
            elif (key > best) if buy else (key < best):
                shown = 0.0
            else:
                shown = book.displayed_at(side, key) if own.depth else None
            before = level.seen
            if shown == before:
                continue
            level.seen = shown
            if shown is None:
                continue
            for w in level.orders:
                if w.ahead is None or shown == 0.0:
                    w.ahead = shown
                elif before is None:  # seen again after hiding behind a better best
                    w.ahead = min(w.ahead, shown)
                elif shown < before:
                    if pro_rata:
                        ahead = w.ahead * shown / before
                        w.ahead = math.ceil(ahead - 1e-9) if whole else ahead
                    else:
                        w.ahead = min(w.ahead, shown)

    def _fill_from_print(
        self, book: _Book, side: Side, key: int, size: float, ts_ms: int, out: list[VenueEvent]
    ) -> None:
        keys = book.keys[side]
        # best-priced first: highest buys, lowest sells; only levels the print reaches
        if side is Side.BUY:
            reached = keys[bisect_left(keys, key) :][::-1]
        else:
            reached = keys[: bisect_left(keys, key + 1)]
        volume = size
        for level_key in reached:
            if volume <= 0:
                break
            level = book.levels[side][level_key]
            if level_key != key:
                volume = self._fill_through(level, volume, ts_ms, out)
            else:
                self._fill_at(level, volume, ts_ms, out)
                if level.seen is not None:
                    level.seen = max(0.0, level.seen - size)
                    book.stale[side] = True
            self._drop_filled(book, side, level)

    def _fill_through(self, level: _Level, volume: float, ts_ms: int, out: list[VenueEvent]) -> float:
        for w in level.orders:
            w.ahead = 0.0  # the print went past the level: no market order was left there
        for w in level.orders:
            quantity = min(w.remaining, volume)
            if quantity > 0:
                volume -= quantity
                self._emit_fill(w, ts_ms, level.price, quantity, Liquidity.MAKER, out)
            if volume <= 0:
                break
        return volume

    def _fill_at(self, level: _Level, volume: float, ts_ms: int, out: list[VenueEvent]) -> None:
        own_ahead = 0.0  # earlier paper orders' remainders before this print
        own_filled = 0.0
        for w in level.orders:
            remaining_before = w.remaining
            if w.ahead is not None:
                ahead = w.ahead + own_ahead
                quantity = min(w.remaining, max(0.0, volume - ahead))
                w.ahead = max(0.0, w.ahead - max(0.0, min(volume, ahead) - own_filled))
                if quantity > 0:
                    own_filled += quantity
                    self._emit_fill(w, ts_ms, level.price, quantity, Liquidity.MAKER, out)
            own_ahead += remaining_before

    def _drop_filled(self, book: _Book, side: Side, level: _Level) -> None:
        done = [w for w in level.orders if w.remaining <= _QTY_EPS * w.order.quantity]
        for w in done:
            self._close(w.order.client_order_id)

    # -------------------------------------------------------------- output

    def _emit_fill(
        self, w: _Working, ts_ms: int, price: float, quantity: float, liquidity: Liquidity, out: list[VenueEvent]
    ) -> None:
        if w.remaining - quantity <= _QTY_EPS * w.order.quantity:
            quantity = w.remaining  # no float dust left on the order
        w.remaining -= quantity
        w.fills += 1
        order = w.order
        out.append(
            Fill(
                fill_id=fill_id(order.client_order_id, w.fills),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=order.side,
                ts_ms=ts_ms,
                price=price,
                quantity=quantity,
                liquidity=liquidity,
            )
        )

    def _book(self, symbol: str) -> _Book:
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book(symbol)
        return book


def _set_side(
    side: _Side, price: float | None, size: float | None, depth: Sequence[tuple[float, float]]
) -> tuple[bool, bool]:
    """Store one side of a quote; (best price or size changed, depth changed)."""
    best_changed = False
    if price != side.raw_price or size != side.raw_size:  # the usual repeat skips the rest
        side.raw_price, side.raw_size = price, size
        before = (side.key, side.size)
        if _valid_price(price):
            side.price = price
            side.key = price_key(price)  # type: ignore[arg-type]
            side.size = _valid_size(size)
        else:
            side.price = side.key = side.size = None
        best_changed = (side.key, side.size) != before
    depth_changed = False
    if depth or side.depth:
        levels = {price_key(p): s for p, s in depth if _valid_price(p) and _valid_size(s) is not None}
        if levels != side.depth:
            depth_changed = True
            side.depth = levels
            side.depth_end = price_key(depth[-1][0]) if levels else None
    return best_changed, depth_changed
