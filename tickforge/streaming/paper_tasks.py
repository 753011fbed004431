"""The risk and paper-matcher partition tasks: the trading kernels on the exactly-once runtime.

Both are :class:`~tickforge.streaming.runtime.PartitionTask` s, partitioned by symbol like every
topic. What they read and what the runtime gives them today:

- :class:`RiskTask` reads ``orders`` (the strategy runners' output). The trading state comes from
  the control topic through a side reader (``control``: the command in force, e.g.
  :meth:`~tickforge.streaming.trading_control.ControlReader.in_force`), the limits from a
  :class:`~tickforge.trading.io.LimitsFile` re-read at most once a second. With one input
  topic there are no quotes and no fills: the reference price is the order's decision-bar close
  (what the runner sized it at) and an approved order counts as filled there (the runner's own
  assumption: a book's exposure is what it ordered), which keeps position, budget and the
  loss limits working on that exposure.
- :class:`MatcherTask` reads market ticks (quote and trade messages, edge JSON or column batches)
  and approved orders, telling them apart by topic: the paper matcher needs both, in event
  order. The runtime consumes one topic, so on it the task runs on one of them only; it is the
  kernel a multi-input runtime would drive (see the report of issue 14 for what that needs).

State is per New York day (intraday books are flat at the close, working paper orders expire at
the session's end): each message is needed until the next New York midnight, so after a restart
the runtime replays the day's input silently and the state is rebuilt exactly (the ids of
orders and fills are deterministic). Side inputs are not replayed: a control command or limits
change applies from when the task sees it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from confluent_kafka import Message

from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.contracts import Quote, QuoteBatch, Trade, TradeBatch
from tickforge.platform.io.kafka import marker_watermark
from tickforge.platform.reasons import Reason
from tickforge.research.bars import NEW_YORK, next_ny_midnight_ms
from tickforge.streaming import metrics
from tickforge.streaming.codec import Undecodable, dead_letter_for, decode_tick_message
from tickforge.streaming.runtime import Output
from tickforge.trading.control import ControlCommand
from tickforge.trading.events import OrderAccepted, OrderCanceled, OrderExpired, OrderRejected, VenueEvent
from tickforge.trading.io import LimitsFile
from tickforge.trading.limits import Bucket
from tickforge.trading.matching import MatchingConfig
from tickforge.trading.orders import Fill, Liquidity, Order
from tickforge.trading.risk import RiskDecision, RiskEngine
from tickforge.trading.session_venue import SessionVenue, StaleSession
from tickforge.trading.sessions import SessionRule

log = logging.getLogger(__name__)

ORDERS_APPROVED = "orders.approved"
ORDERS_REJECTED = "orders.rejected"
FILLS = "fills"
ORDER_EVENTS = "orders.events"
_ORDER_FIELDS = (
    "client_order_id",
    "strategy",
    "symbol",
    "side",
    "quantity",
    "order_type",
    "limit_price",
    "time_in_force",
    "decision_ts_ms",
    "arrival_ts_ms",
)


@dataclass(frozen=True)
class OrderMessage:
    order: Order
    bucket: Bucket
    reference_price: float
    extra: dict[str, Any]  # weight, timeframe, ... passed on unchanged


def decode_order_message(value: bytes | None) -> OrderMessage:
    """An ``orders`` message (the runner's JSON); :class:`Undecodable` says why not."""
    if not value:
        raise Undecodable(Reason.UNDECODABLE, "empty order message")
    try:
        raw = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise Undecodable(Reason.UNDECODABLE, str(exc)) from exc
    if not isinstance(raw, dict):
        raise Undecodable(Reason.SCHEMA_VIOLATION, "an order is a JSON object")
    missing = [f for f in (*_ORDER_FIELDS, "bucket", "reference_price") if f not in raw]
    if missing:
        raise Undecodable(Reason.SCHEMA_VIOLATION, f"order message lacks {missing}")
    try:
        order = Order(**{f: raw[f] for f in _ORDER_FIELDS})
        bucket = Bucket(raw["bucket"])
        reference = float(raw["reference_price"])
    except (ValueError, TypeError) as exc:
        raise Undecodable(Reason.SCHEMA_VIOLATION, str(exc)) from exc
    extra = {k: v for k, v in raw.items() if k not in (*_ORDER_FIELDS, "bucket", "reference_price")}
    return OrderMessage(order, bucket, reference, extra)


def encode_order_message(message: OrderMessage, **more: Any) -> bytes:
    o = message.order
    fields = {
        "client_order_id": o.client_order_id,
        "strategy": o.strategy,
        "symbol": o.symbol,
        "side": str(o.side),
        "quantity": o.quantity,
        "order_type": str(o.order_type),
        "limit_price": o.limit_price,
        "time_in_force": str(o.time_in_force),
        "decision_ts_ms": o.decision_ts_ms,
        "arrival_ts_ms": o.arrival_ts_ms,
    }
    return msgspec.json.encode(
        {**fields, **message.extra, "bucket": str(message.bucket), "reference_price": message.reference_price, **more}
    )


def encode_fill(fill: Fill) -> bytes:
    return msgspec.json.encode(
        {
            "fill_id": fill.fill_id,
            "client_order_id": fill.client_order_id,
            "symbol": fill.symbol,
            "side": str(fill.side),
            "ts_ms": fill.ts_ms,
            "price": fill.price,
            "quantity": fill.quantity,
            "liquidity": str(fill.liquidity),
        }
    )


def encode_event(event: VenueEvent) -> bytes:
    kind = {
        OrderAccepted: "accepted",
        OrderRejected: "rejected",
        OrderCanceled: "canceled",
        OrderExpired: "expired",
    }.get(type(event), "cancel_rejected")
    return msgspec.json.encode(
        {
            "event": kind,
            "client_order_id": event.client_order_id,
            "ts_ms": event.ts_ms,
            "reason": str(getattr(event, "reason", "")) or None,
        }
    )


def _day_end(ts_ms: int) -> int:
    """The next New York midnight after ``ts_ms``: where the day's state is no longer needed."""
    return next_ny_midnight_ms(datetime.fromtimestamp(ts_ms // 1000, NEW_YORK).date())


class _EventTimeTask:
    """What both tasks share: their clock is their input's event time (an idle advance never
    moves it), and they send as they decide (nothing waits for ``close``)."""

    _watermark: int

    @property
    def watermark(self) -> int:
        return self._watermark

    def idle(self, out: Output) -> None:
        """Nothing moves without input."""

    def close(self, out: Output) -> None:
        """Everything is sent when it happens."""

    @property
    def idle_limit(self) -> int:
        return self._watermark

    def restore(self, watermark: int, idle_limit: int | None = None, out: Output | None = None) -> None:
        self._watermark = max(self._watermark, watermark)


class RiskTask(_EventTimeTask):
    def __init__(
        self,
        partition: int,
        start_watermark: int,
        source: str,
        approved_topic: str,
        rejected_topic: str,
        limits: LimitsFile,
        control: Callable[[], ControlCommand | None],
        worker: str = "risk",
        account: str = "paper",
        reload_every_s: float = 1.0,
    ) -> None:
        self.partition = partition
        self.source, self.approved_topic, self.rejected_topic = source, approved_topic, rejected_topic
        self._limits, self._control = limits, control
        self._worker, self._account = worker, account
        self._watermark = start_watermark
        self._now = start_watermark
        self._day_end: int | None = None
        self._engine: RiskEngine | None = None
        self._applied: ControlCommand | None = None
        self._reload_every_s, self._reloaded_at = reload_every_s, 0.0
        self.decisions: list[RiskDecision] = []

    @property
    def engine(self) -> RiskEngine | None:
        return self._engine

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            self._watermark = max(self._watermark, marker)
            return NO_WATERMARK
        try:
            message = decode_order_message(msg.value())
        except Undecodable as exc:
            out.dead_letter(dead_letter_for(msg, exc.reason, self.source, exc.detail))
            return NO_WATERMARK
        order = message.order
        day_end = _day_end(order.decision_ts_ms)
        if self._day_end is not None and day_end < self._day_end:
            # an order of a day that is over: deciding it would need that day's state, gone now
            detail = f"order {order.client_order_id} decided on an earlier New York day than the one in progress"
            out.dead_letter(dead_letter_for(msg, Reason.LATE, self.source, detail))
            return NO_WATERMARK
        if self._engine is None or self._day_end is None or day_end > self._day_end:
            self._engine, self._day_end, self._applied = (
                RiskEngine(self._limits.current, lambda: self._now),
                day_end,
                None,
            )
        engine = self._engine
        self._now = max(self._now, order.decision_ts_ms)
        self._sync(engine)
        engine.on_quote(order.symbol, message.reference_price, message.reference_price)
        engine.on_trade(order.symbol, message.reference_price)
        decision = engine.check(order, message.bucket)
        if not decision.repeat:
            self.decisions.append(decision)
            if decision.approved:
                out.send(self.approved_topic, order.symbol, encode_order_message(message, risk_ts_ms=decision.ts_ms))
                engine.on_fill(
                    Fill(
                        f"{order.client_order_id}.assumed",
                        order.client_order_id,
                        order.symbol,
                        order.side,
                        order.arrival_ts_ms,
                        message.reference_price,
                        order.quantity,
                        Liquidity.TAKER,
                    )
                )
            else:
                out.send(
                    self.rejected_topic,
                    order.symbol,
                    encode_order_message(
                        message, risk_ts_ms=decision.ts_ms, rule=str(decision.rule), detail=decision.detail
                    ),
                )
                if not out.replaying:
                    metrics.RISK_REJECTIONS.labels(worker=self._worker, rule=str(decision.rule)).inc()
        metrics.TRADING_STATE.labels(worker=self._worker, account=self._account).set(engine.state.severity)
        self._watermark = max(self._watermark, order.decision_ts_ms)
        return day_end

    def _sync(self, engine: RiskEngine) -> None:
        """The limits file (re-read at most every ``reload_every_s``) and the command in force."""
        wall = time.monotonic()
        if wall - self._reloaded_at >= self._reload_every_s:
            self._reloaded_at = wall
            if self._limits.reload_if_changed().changed:
                engine.update_limits(self._limits.current)
        if engine.limits is not self._limits.current:
            engine.update_limits(self._limits.current)
        command = self._control()
        if command is not None and command is not self._applied:
            engine.apply_control(command)
            self._applied = command


class MatcherTask(_EventTimeTask):
    """The paper venue under the session rule (:class:`~tickforge.trading.session_venue.SessionVenue`,
    the offline replay's too): each symbol trades its class's session; an order decided after the
    close is rejected, working orders expire when the session ends, and input of a session day older
    than the symbol's current one is a dead letter (``late``): it never resets the newer day."""

    def __init__(
        self,
        partition: int,
        start_watermark: int,
        ticks_topic: str,
        orders_topic: str,
        fills_topic: str,
        events_topic: str,
        config: MatchingConfig | None = None,
        sessions: SessionRule | None = None,
    ) -> None:
        self.partition = partition
        self.ticks_topic, self.orders_topic = ticks_topic, orders_topic
        self.fills_topic, self.events_topic = fills_topic, events_topic
        self._watermark = start_watermark
        self.venue = SessionVenue(sessions, config)
        self._symbols: dict[str, str] = {}  # client_order_id -> symbol (events carry only the id)

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            self._advance(marker, out)
            return NO_WATERMARK
        if msg.topic() == self.orders_topic:
            return self._order(msg, out)
        try:
            tick = decode_tick_message(msg.value())
        except Undecodable as exc:
            out.dead_letter(dead_letter_for(msg, exc.reason, self.ticks_topic, exc.detail))
            return NO_WATERMARK
        events: list[VenueEvent] = []
        last, needed, stale = NO_WATERMARK, NO_WATERMARK, []
        for event in _market_events(tick):
            try:
                events += self.venue.on_quote(event) if isinstance(event, Quote) else self.venue.on_trade(event)
            except StaleSession as exc:
                stale.append(str(exc))
                continue
            last = max(last, event.ts_ms)
            needed = max(needed, self._day_end(event.symbol))
        self._emit(events, out)
        if stale:
            detail = f"{len(stale)} tick(s) of an older session day, e.g. {stale[0]}"
            out.dead_letter(dead_letter_for(msg, Reason.LATE, self.ticks_topic, detail))
        if last == NO_WATERMARK:
            return NO_WATERMARK
        self._advance(last, out)
        return needed

    def _order(self, msg: Message, out: Output) -> int:
        try:
            message = decode_order_message(msg.value())
        except Undecodable as exc:
            out.dead_letter(dead_letter_for(msg, exc.reason, self.orders_topic, exc.detail))
            return NO_WATERMARK
        order = message.order
        try:
            events = self.venue.submit(order)
        except StaleSession as exc:
            out.dead_letter(dead_letter_for(msg, Reason.LATE, self.orders_topic, str(exc)))
            return NO_WATERMARK
        self._symbols[order.client_order_id] = order.symbol
        self._emit(events, out)
        return self._day_end(order.symbol)

    def _day_end(self, symbol: str) -> int:
        session = self.venue.session(symbol)
        assert session is not None  # the venue has just seen the symbol
        return session.day_end_ms

    def _advance(self, watermark: int, out: Output) -> None:
        self._watermark = max(self._watermark, watermark)
        self._emit(self.venue.end_sessions_until(self._watermark), out)

    def _emit(self, events: list[VenueEvent], out: Output) -> None:
        for event in events:
            symbol = self._symbols.get(event.client_order_id, "")
            if isinstance(event, Fill):
                out.send(self.fills_topic, event.symbol, encode_fill(event))
            else:
                out.send(self.events_topic, symbol, encode_event(event))


def _market_events(tick: TradeBatch | QuoteBatch | Trade | Quote) -> list[Quote | Trade]:
    if isinstance(tick, (Quote, Trade)):
        return [tick]
    if isinstance(tick, QuoteBatch):
        ts, bid, ask, bid_size, ask_size = tick.arrays()
        return [
            Quote(ts_ms=int(t), symbol=tick.symbol, bid=float(b), ask=float(a), bid_size=float(bs), ask_size=float(az))
            for t, b, a, bs, az in zip(ts, bid, ask, bid_size, ask_size, strict=True)
        ]
    ts, price, size, _ = tick.arrays()
    names, index = tick.row_symbols()
    return [
        Trade(
            ts_ms=int(ts[i]),
            symbol=names[0] if index is None else names[int(index[i])],
            price=float(price[i]),
            size=float(size[i]),
        )
        for i in range(len(ts))
    ]
