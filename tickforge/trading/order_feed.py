"""The OMS fed by the trading path's records: orders as decided, risk's refusals, the venue's
events and fills, each order's records put in causal order whatever order they arrived in.

The records of one order come from several sources (the runner's orders, risk's refusals, the
venue's events and its fills), each in its own order, and together in none: a fill may be read
before the acceptance it follows. :meth:`OrderFeed.apply` applies an order's records in the
order they happened (the decision first, then by event time, an acceptance or rejection before
a fill at the same millisecond and a fill before a cancel or expiry, then as their source wrote
them), and keeps back what cannot apply yet: a record of an order not seen so far, or a move
whose prerequisite is still to come (a fill before its acceptance). The rest of that order
waits behind it, so the trail's numbering is the same on every reading of the same records.
What can never apply (a move out of a closed order, an overfill, an id with other content) is
refused with the OMS's reason.

Nothing here knows where the records come from or go to: the OMS store worker reads them from
Kafka and writes :meth:`OrderFeed.frames` with :func:`tickforge.trading.store.store_oms`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from tickforge.trading.accounting import FeeSchedule
from tickforge.trading.events import (
    CancelRejected,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    VenueEvent,
)
from tickforge.trading.oms import IllegalTransition, OmsError, OrderManager, Transition
from tickforge.trading.orders import Fill, Order
from tickforge.trading.replay import FILL_SCHEMA, ORDER_SCHEMA, TRANSITION_SCHEMA, fill_row, order_row, transition_row


@dataclass(frozen=True, slots=True)
class OrderMeta:
    """What the OMS tables keep of an order beyond the order itself."""

    strategy: str | None = None  # the pick's strategy (the order's own names its book)
    book: str | None = None
    timeframe: str | None = None
    bucket: str | None = None


@dataclass(frozen=True, slots=True)
class Decided:
    """An order as the strategy runner decided it."""

    order: Order
    meta: OrderMeta


@dataclass(frozen=True, slots=True)
class RiskRefused:
    """An order risk refused, with the rule (the order's REJECTED move names it)."""

    order: Order
    meta: OrderMeta
    ts_ms: int
    rule: str


FeedRecord = Decided | RiskRefused | VenueEvent


@dataclass(frozen=True, slots=True)
class Entry:
    """A record and where its source wrote it (any sortable position: topic rank, partition,
    offset), which orders records of one order that nothing else orders."""

    record: FeedRecord
    position: tuple[int, ...]
    tag: Any = None  # the caller's (what to dead-letter it as, where to commit)

    @property
    def client_order_id(self) -> str:
        record = self.record
        return record.order.client_order_id if isinstance(record, (Decided, RiskRefused)) else record.client_order_id


@dataclass
class FeedOutcome:
    touched: set[str] = field(default_factory=set)  # orders whose record moved
    waiting: list[Entry] = field(default_factory=list)  # cannot apply yet, in their order
    refused: list[tuple[Entry, str]] = field(default_factory=list)  # never will: (entry, why)


_ORDER_FIELDS = tuple(f.name for f in dataclasses.fields(Order))
# Within one event-time millisecond: the venue's answer, then fills, then the order's end.
_RANK = {OrderAccepted: 0, OrderRejected: 0, RiskRefused: 0, Fill: 1, OrderCanceled: 2, OrderExpired: 2}


def causal_key(entry: Entry) -> tuple:
    record = entry.record
    if isinstance(record, Decided):
        return (0, 0, 0, entry.position)
    return (1, record.ts_ms, _RANK.get(type(record), 2), entry.position)


class OrderFeed:
    """An :class:`OrderManager` (restored from the store for the orders at hand) and the meta of
    its orders, fed :class:`Entry` records."""

    def __init__(self, fees: FeeSchedule | None = None) -> None:
        self.oms = OrderManager()
        self.meta: dict[str, OrderMeta] = {}
        self.fees = fees or FeeSchedule()

    def restore(self, order: Order, meta: OrderMeta, trail: Sequence[Transition], fills: Iterable[Fill]) -> None:
        """An order as stored (see :meth:`OrderManager.restore`)."""
        self.oms.restore(order, trail, {f.fill_id: f for f in fills})
        self.meta[order.client_order_id] = meta

    def apply(self, entries: Iterable[Entry]) -> FeedOutcome:
        result = FeedOutcome()
        by_order: dict[str, list[Entry]] = {}
        for entry in entries:
            by_order.setdefault(entry.client_order_id, []).append(entry)
        for client_order_id, mine in by_order.items():
            mine.sort(key=causal_key)
            for i, entry in enumerate(mine):
                verdict = self._apply_one(entry)
                if verdict == "wait":
                    result.waiting += mine[i:]
                    break
                if verdict == "applied":
                    result.touched.add(client_order_id)
                elif verdict != "duplicate":
                    result.refused.append((entry, verdict))
        return result

    def _apply_one(self, entry: Entry) -> str:
        """``applied``, ``duplicate``, ``wait``, or why it is refused."""
        record = entry.record
        try:
            if isinstance(record, (Decided, RiskRefused)):
                applied = self.oms.submit(record.order).value
                self.meta.setdefault(record.order.client_order_id, record.meta)
                if isinstance(record, RiskRefused):
                    applied = self.oms.reject(record.order.client_order_id, record.ts_ms, record.rule).value
                return applied
            if record.client_order_id not in self.oms:
                return "wait"
            if isinstance(record, CancelRejected):
                return "duplicate"  # changes no order
            return self.oms.apply(record).value  # type: ignore[union-attr]
        except IllegalTransition as exc:
            # Out of a closed order never; out of an open one once the move before it has come.
            return str(exc) if exc.current.is_terminal else "wait"
        except OmsError as exc:
            return str(exc)

    def frames(self, client_order_ids: Iterable[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """(orders, transitions, fills) of these orders, whole, in the replay's schemas."""
        ids = sorted(set(client_order_ids))
        orders, transitions = [], []
        for cid in ids:
            record = self.oms.get(cid)
            o, meta = record.order, self.meta.get(cid, OrderMeta())
            orders.append(
                {
                    **order_row(record),
                    "strategy": meta.strategy or o.strategy,
                    "book": meta.book,
                    "timeframe": meta.timeframe,
                    "bucket": meta.bucket,
                }
            )
            transitions += [transition_row(t) for t in record.transitions]
        wanted = set(ids)
        fills = [
            fill_row(f, self.meta.get(f.client_order_id, OrderMeta()).book, self.fees.fee(f))
            for f in self.oms.fills
            if f.client_order_id in wanted
        ]
        order_schema = {k: v for k, v in ORDER_SCHEMA.items() if k not in ("reference_price", "reject_rule")}
        return (
            pl.DataFrame(orders, schema=order_schema),
            pl.DataFrame(transitions, schema=TRANSITION_SCHEMA),
            pl.DataFrame(fills, schema=FILL_SCHEMA),
        )


def restore_stored(feed: OrderFeed, orders: pl.DataFrame, transitions: pl.DataFrame, fills: pl.DataFrame) -> None:
    """The stored orders (the OMS tables' rows, as :func:`~tickforge.trading.store.read_oms` reads
    them) back into ``feed``, each with its trail and fills."""
    trails: dict[str, list[Transition]] = {}
    for t in transitions.iter_rows(named=True):
        trails.setdefault(t["client_order_id"], []).append(Transition(**t))
    filled: dict[str, list[Fill]] = {}
    for f in fills.iter_rows(named=True):
        fields = {k: f[k] for k in ("fill_id", "client_order_id", "symbol", "side", "ts_ms", "price", "quantity")}
        filled.setdefault(f["client_order_id"], []).append(Fill(**fields, liquidity=f["liquidity"]))
    for row in orders.iter_rows(named=True):
        cid = row["client_order_id"]
        order = Order(**{k: row[k] for k in _ORDER_FIELDS})
        meta = OrderMeta(strategy=row["strategy"], book=row["book"], timeframe=row["timeframe"], bucket=row["bucket"])
        feed.restore(order, meta, trails.get(cid, []), filled.get(cid, []))
