"""The trading path's messages on Kafka: orders (as the strategy runner writes them, and as risk
passes them on to ``orders.approved`` / ``orders.rejected``), fills, order events, and the market
events of a tick message. JSON, keyed by symbol like every topic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from confluent_kafka import Message

from tickforge.platform.contracts import Quote, QuoteBatch, Trade, TradeBatch
from tickforge.platform.reasons import Reason
from tickforge.streaming.codec import Undecodable, decode_tick_message
from tickforge.trading.events import (
    CancelReason,
    CancelRejected,
    CancelRejectReason,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    VenueEvent,
)
from tickforge.trading.limits import Bucket
from tickforge.trading.orders import Fill, Order

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
    raw = _json_object(value, "order")
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
    """The fill's fields as JSON (its enums as their values)."""
    return msgspec.json.encode(fill)


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


def _json_object(value: bytes | None, what: str) -> dict[str, Any]:
    if not value:
        raise Undecodable(Reason.UNDECODABLE, f"empty {what} message")
    try:
        raw = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise Undecodable(Reason.UNDECODABLE, str(exc)) from exc
    if not isinstance(raw, dict):
        raise Undecodable(Reason.SCHEMA_VIOLATION, f"a {what} is a JSON object")
    return raw


def decode_fill(value: bytes | None) -> Fill:
    """A ``fills`` message (:func:`encode_fill`'s JSON); :class:`Undecodable` says why not."""
    raw = _json_object(value, "fill")
    fields = ("fill_id", "client_order_id", "symbol", "side", "ts_ms", "price", "quantity", "liquidity")
    try:
        return Fill(**{f: raw[f] for f in fields})
    except KeyError as exc:
        raise Undecodable(Reason.SCHEMA_VIOLATION, f"fill message lacks {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise Undecodable(Reason.SCHEMA_VIOLATION, str(exc)) from exc


_EVENTS: dict[str, Callable[[str, int, Any], VenueEvent]] = {
    "accepted": lambda cid, ts, reason: OrderAccepted(cid, ts),
    "rejected": lambda cid, ts, reason: OrderRejected(cid, ts, str(reason)),
    "canceled": lambda cid, ts, reason: OrderCanceled(cid, ts, CancelReason(reason)),
    "expired": lambda cid, ts, reason: OrderExpired(cid, ts),
    "cancel_rejected": lambda cid, ts, reason: CancelRejected(cid, ts, CancelRejectReason(reason)),
}


def decode_event(value: bytes | None) -> VenueEvent:
    """An ``orders.events`` message (:func:`encode_event`'s JSON); :class:`Undecodable` says why not."""
    raw = _json_object(value, "order event")
    make = _EVENTS.get(raw.get("event"))  # type: ignore[arg-type]
    cid, ts = raw.get("client_order_id"), raw.get("ts_ms")
    if make is None:
        raise Undecodable(Reason.SCHEMA_VIOLATION, f"unknown order event {raw.get('event')!r}")
    if not isinstance(cid, str) or not cid or not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise Undecodable(Reason.SCHEMA_VIOLATION, "an order event names its client_order_id and ts_ms")
    try:
        return make(cid, ts, raw.get("reason"))
    except ValueError as exc:
        raise Undecodable(Reason.SCHEMA_VIOLATION, str(exc)) from exc


def market_events(tick: TradeBatch | QuoteBatch | Trade | Quote) -> list[Quote | Trade]:
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


def order_or_market_items(msg: Message, orders_topic: str) -> list[tuple[int, Any]]:
    """A trading worker's input items with their event times: an order message of
    ``orders_topic`` at its decision time, or a tick message's quotes and prints at theirs;
    raises :class:`Undecodable`."""
    if msg.topic() == orders_topic:
        message = decode_order_message(msg.value())
        return [(message.order.decision_ts_ms, message)]
    return [(event.ts_ms, event) for event in market_events(decode_tick_message(msg.value()))]
