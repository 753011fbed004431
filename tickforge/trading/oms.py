"""Order management: one state machine per order, an audit trail, idempotent on ids.

States and the only legal moves::

    NEW -> ACCEPTED | REJECTED | CANCELED
    ACCEPTED -> PARTIALLY_FILLED | FILLED | CANCELED | EXPIRED
    PARTIALLY_FILLED -> PARTIALLY_FILLED | FILLED | CANCELED | EXPIRED
    FILLED, CANCELED, REJECTED, EXPIRED: terminal

A move outside this table raises :class:`IllegalTransition` (the caller logs it and moves on);
the order is left as it was. Repeats are recognised, not applied: a second ``submit`` of the same
order, a fill id already applied, or a status event whose target state is already in the order's
trail (a re-delivered accept or cancel) returns :attr:`Applied.DUPLICATE`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from tickforge.trading.events import (
    CancelRejected,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    VenueEvent,
)
from tickforge.trading.orders import Fill, Order

# Fill quantities are floats (fractional crypto sizes); sums within this of the order quantity
# count as complete.
_QTY_EPS = 1e-9


class OrderStatus(StrEnum):
    NEW = "NEW"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED})

LEGAL_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset({OrderStatus.ACCEPTED, OrderStatus.REJECTED, OrderStatus.CANCELED}),
    OrderStatus.ACCEPTED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}


class Applied(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"


class OmsError(Exception):
    """A request the OMS refuses; the order (if any) is unchanged."""


class IllegalTransition(OmsError):
    def __init__(self, client_order_id: str, current: OrderStatus, target: OrderStatus, why: str = "") -> None:
        self.client_order_id = client_order_id
        self.current = current
        self.target = target
        super().__init__(
            f"order {client_order_id}: {current} -> {target} is not a legal transition" + (f" ({why})" if why else "")
        )


class UnknownOrder(OmsError):
    def __init__(self, client_order_id: str) -> None:
        self.client_order_id = client_order_id
        super().__init__(f"unknown order {client_order_id}")


class ConflictingDuplicate(OmsError):
    """The same id with different content: a bug upstream, never silently merged."""


@dataclass(frozen=True, slots=True)
class Transition:
    client_order_id: str
    seq: int  # 0 for the NEW entry, then 1, 2, ... per order
    from_status: OrderStatus | None
    to_status: OrderStatus
    ts_ms: int
    reason: str  # why (cancel reason, reject rule, fill id)


@dataclass(slots=True)
class OrderRecord:
    order: Order
    status: OrderStatus = OrderStatus.NEW
    filled_quantity: float = 0.0
    filled_notional: float = 0.0
    fill_ids: list[str] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    @property
    def remaining_quantity(self) -> float:
        return max(0.0, self.order.quantity - self.filled_quantity)

    @property
    def average_fill_price(self) -> float | None:
        return self.filled_notional / self.filled_quantity if self.filled_quantity > 0 else None


class OrderManager:
    """All orders of one account (any number of strategies and symbols)."""

    def __init__(self) -> None:
        self._orders: dict[str, OrderRecord] = {}
        self._fill_ids: set[str] = set()
        self._trail: list[Transition] = []
        self.fills: list[Fill] = []

    # -------------------------------------------------------------- queries

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._orders

    def __len__(self) -> int:
        return len(self._orders)

    def get(self, client_order_id: str) -> OrderRecord:
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise UnknownOrder(client_order_id) from None

    def records(self) -> Iterator[OrderRecord]:
        return iter(self._orders.values())

    def open_orders(self) -> list[OrderRecord]:
        return [r for r in self._orders.values() if not r.status.is_terminal]

    def audit_trail(self) -> list[Transition]:
        """Every transition of every order, in the order they were applied."""
        return list(self._trail)

    # -------------------------------------------------------------- commands

    def submit(self, order: Order, ts_ms: int | None = None) -> Applied:
        existing = self._orders.get(order.client_order_id)
        if existing is not None:
            if existing.order != order:
                raise ConflictingDuplicate(f"order {order.client_order_id} submitted again with different content")
            return Applied.DUPLICATE
        record = OrderRecord(order)
        stamp = order.decision_ts_ms if ts_ms is None else ts_ms
        entry = Transition(order.client_order_id, 0, None, OrderStatus.NEW, stamp, "submitted")
        record.transitions.append(entry)
        self._trail.append(entry)
        self._orders[order.client_order_id] = record
        return Applied.APPLIED

    def accept(self, client_order_id: str, ts_ms: int) -> Applied:
        return self._move(client_order_id, OrderStatus.ACCEPTED, ts_ms, "accepted")

    def reject(self, client_order_id: str, ts_ms: int, reason: str) -> Applied:
        return self._move(client_order_id, OrderStatus.REJECTED, ts_ms, reason)

    def cancel(self, client_order_id: str, ts_ms: int, reason: str) -> Applied:
        return self._move(client_order_id, OrderStatus.CANCELED, ts_ms, reason)

    def expire(self, client_order_id: str, ts_ms: int) -> Applied:
        return self._move(client_order_id, OrderStatus.EXPIRED, ts_ms, "expired")

    def apply_fill(self, fill: Fill) -> Applied:
        if fill.fill_id in self._fill_ids:
            return Applied.DUPLICATE
        record = self.get(fill.client_order_id)
        order = record.order
        if fill.symbol != order.symbol or fill.side is not order.side:
            raise OmsError(f"fill {fill.fill_id} does not match order {order.client_order_id} (symbol or side)")
        filled = record.filled_quantity + fill.quantity
        if filled > order.quantity * (1 + _QTY_EPS) + _QTY_EPS:
            raise OmsError(f"fill {fill.fill_id} overfills order {order.client_order_id}: {filled} > {order.quantity}")
        complete = filled >= order.quantity * (1 - _QTY_EPS) - _QTY_EPS
        target = OrderStatus.FILLED if complete else OrderStatus.PARTIALLY_FILLED
        self._check(record, target)
        record.filled_quantity = order.quantity if complete else filled
        record.filled_notional += fill.notional
        record.fill_ids.append(fill.fill_id)
        self._fill_ids.add(fill.fill_id)
        self.fills.append(fill)
        self._record(record, target, fill.ts_ms, fill.fill_id)
        return Applied.APPLIED

    def apply(self, event: VenueEvent) -> Applied | None:
        """Apply one venue event; ``None`` for events that change no order (a rejected cancel)."""
        if isinstance(event, Fill):
            return self.apply_fill(event)
        if isinstance(event, OrderAccepted):
            return self.accept(event.client_order_id, event.ts_ms)
        if isinstance(event, OrderRejected):
            return self.reject(event.client_order_id, event.ts_ms, event.reason)
        if isinstance(event, OrderCanceled):
            return self.cancel(event.client_order_id, event.ts_ms, str(event.reason))
        if isinstance(event, OrderExpired):
            return self.expire(event.client_order_id, event.ts_ms)
        if isinstance(event, CancelRejected):
            return None
        raise TypeError(f"not a venue event: {event!r}")

    def restore(self, order: Order, trail: Sequence[Transition], fills: Mapping[str, Fill]) -> None:
        """Take an order back as it was stored: its NEW entry, then every later move applied again
        in ``seq`` order (a fill move names its fill id in ``fills``), so the record, the trail and
        its numbering come out as stored. A trail that does not apply again raises :class:`OmsError`."""
        steps = sorted(trail, key=lambda t: t.seq)
        if not steps or OrderStatus(steps[0].to_status) is not OrderStatus.NEW:
            raise OmsError(f"order {order.client_order_id}: a stored trail starts with its NEW entry")
        if [t.seq for t in steps] != list(range(len(steps))):
            raise OmsError(f"order {order.client_order_id}: stored trail numbers {[t.seq for t in steps]}")
        self.submit(order, steps[0].ts_ms)
        for t in steps[1:]:
            target = OrderStatus(t.to_status)
            if target in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED):
                fill = fills.get(t.reason)
                if fill is None:
                    raise OmsError(f"order {order.client_order_id}: stored move {t.seq} names no stored fill")
                self.apply_fill(fill)
            else:
                self._move(order.client_order_id, target, t.ts_ms, t.reason)

    # -------------------------------------------------------------- internals

    def _move(self, client_order_id: str, target: OrderStatus, ts_ms: int, reason: str) -> Applied:
        record = self.get(client_order_id)
        if any(t.to_status is target for t in record.transitions):
            return Applied.DUPLICATE
        self._check(record, target)
        self._record(record, target, ts_ms, reason)
        return Applied.APPLIED

    @staticmethod
    def _check(record: OrderRecord, target: OrderStatus) -> None:
        if target not in LEGAL_TRANSITIONS[record.status]:
            raise IllegalTransition(record.order.client_order_id, record.status, target)

    def _record(self, record: OrderRecord, target: OrderStatus, ts_ms: int, reason: str) -> None:
        entry = Transition(record.order.client_order_id, len(record.transitions), record.status, target, ts_ms, reason)
        record.transitions.append(entry)
        self._trail.append(entry)
        record.status = target
