"""What a venue (the paper matcher, a broker adapter) reports about an order.

A ``Fill`` (see ``orders``) reports an execution; the events below report every other change.
Each carries the event time at which it happened at the venue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tickforge.trading.orders import Fill


class CancelReason(StrEnum):
    REQUESTED = "requested"  # the owner asked
    IOC_REMAINDER = "ioc_remainder"  # what an IOC order could not take at once
    NO_LIQUIDITY = "no_liquidity"  # an IOC arriving at an empty, one-sided, locked or crossed book


class RejectReason(StrEnum):
    UNKNOWN_SYMBOL = "unknown_symbol"


class CancelRejectReason(StrEnum):
    UNKNOWN_ORDER = "unknown_order"
    ALREADY_CLOSED = "already_closed"  # filled, canceled or expired before the cancel arrived


@dataclass(frozen=True, slots=True)
class OrderAccepted:
    client_order_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class OrderRejected:
    client_order_id: str
    ts_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class OrderCanceled:
    client_order_id: str
    ts_ms: int
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class OrderExpired:
    client_order_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class CancelRejected:
    """A cancel that changed nothing (the order is unknown or was closed first)."""

    client_order_id: str
    ts_ms: int
    reason: CancelRejectReason


VenueEvent = OrderAccepted | OrderRejected | OrderCanceled | OrderExpired | CancelRejected | Fill
