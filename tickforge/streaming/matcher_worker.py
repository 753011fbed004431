"""Paper-matcher worker: approved orders + market ticks -> ``fills`` and ``orders.events``, exactly once.

The paper venue under the session rule (:class:`~tickforge.trading.session_venue.SessionVenue`,
the offline replay's): partition ``p`` of ``orders.approved`` (risk's output) and of ``ticks`` are
merged in event time (:mod:`tickforge.streaming.merge`), an order at its decision time and before
the ticks of the same millisecond, as the offline replay submits it; the venue holds it until its
arrival (decision time plus the configured latency). Each symbol trades its class's session: an
order decided after the close is rejected, working orders expire when the session ends (once every
input has passed its end), and a tick of a session day older than the symbol's current one is a
dead letter (``late``): it never resets the newer day.

State is per session day: every input is needed until its session's day end, so a restart replays
the day silently and rebuilds the books, queues and working orders exactly (fill and order ids are
deterministic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message

from tickforge.platform.contracts import Quote
from tickforge.platform.io.kafka import topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.platform.topics import FILLS, ORDER_EVENTS, ORDERS_APPROVED, TICKS
from tickforge.streaming.codec import dead_letter_for
from tickforge.streaming.merge import merged_ports
from tickforge.streaming.order_messages import (
    OrderMessage,
    encode_event,
    encode_fill,
    order_or_market_items,
)
from tickforge.streaming.runtime import Output, TransactionalWorker
from tickforge.trading.events import VenueEvent
from tickforge.trading.matching import MatchingConfig
from tickforge.trading.orders import Fill
from tickforge.trading.session_venue import SessionVenue, StaleSession
from tickforge.trading.sessions import SessionRule

NAME = "paper-matcher"


class MatcherTask:
    """The paper venue for one partition: a :class:`~tickforge.streaming.merge.MergedTask` over
    ``orders.approved`` and ``ticks``."""

    def __init__(
        self,
        orders_topic: str,
        ticks_topic: str,
        fills_topic: str,
        events_topic: str,
        config: MatchingConfig | None = None,
        sessions: SessionRule | None = None,
    ) -> None:
        self.orders_topic, self.ticks_topic = orders_topic, ticks_topic
        self.fills_topic, self.events_topic = fills_topic, events_topic
        self.venue = SessionVenue(sessions, config)
        self._symbols: dict[str, str] = {}  # client_order_id -> symbol (events carry only the id)

    def decode(self, topic: str, msg: Message) -> Sequence[tuple[int, Any]]:
        return order_or_market_items(msg, self.orders_topic)

    def retain_until(self, topic: str, ts_ms: int, item: Any) -> int:
        symbol = item.order.symbol if isinstance(item, OrderMessage) else item.symbol
        return self.venue.rule.session(symbol, ts_ms).day_end_ms

    def on_item(self, topic: str, ts_ms: int, item: Any, msg: Message, out: Output) -> None:
        try:
            if isinstance(item, OrderMessage):
                order = item.order
                events = self.venue.submit(order)
                self._symbols[order.client_order_id] = order.symbol
            elif isinstance(item, Quote):
                events = self.venue.on_quote(item)
            else:
                events = self.venue.on_trade(item)
        except StaleSession as exc:
            out.dead_letter(dead_letter_for(msg, Reason.LATE, topic, str(exc)))
            return
        self._emit(events, out)

    def on_frontier(self, frontier_ms: int, out: Output) -> None:
        """Nothing stamped before the frontier is still to come, on either input: the orders that
        have arrived by then are matched now, not at the next tick (a feed gap later), and
        sessions ended by then end."""
        self._emit(self.venue.advance_to(frontier_ms - 1), out)

    def close(self, out: Output) -> None:
        """Everything is sent when it happens."""

    def _emit(self, events: list[VenueEvent], out: Output) -> None:
        for event in events:
            if isinstance(event, Fill):
                out.send(self.fills_topic, event.symbol, encode_fill(event))
            else:
                out.send(self.events_topic, self._symbols.get(event.client_order_id, ""), encode_event(event))


def make_worker(settings: Settings, instance_id: str = "0") -> TransactionalWorker:
    """The paper matcher over ``orders.approved`` and ``ticks`` under the settings' session rule."""
    orders, ticks = topic_name(settings, ORDERS_APPROVED), topic_name(settings, TICKS)
    fills, events = topic_name(settings, FILLS), topic_name(settings, ORDER_EVENTS)
    sessions = SessionRule.from_settings(settings.signals)
    return TransactionalWorker(
        settings,
        NAME,
        [ORDERS_APPROVED, TICKS],
        merged_ports([orders, ticks], lambda partition: MatcherTask(orders, ticks, fills, events, None, sessions)),
        instance_id=instance_id,
    )
