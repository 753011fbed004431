"""OMS store: the live trading path's records into the OMS tables in PostgreSQL.

Reads the runner's ``orders``, risk's ``orders.rejected``, the venue's ``orders.events`` and
``fills`` with ``read_committed``. A poll's records are applied to the orders they name, taken
back from the tables as stored, through :class:`~tickforge.trading.order_feed.OrderFeed` (each
order's records in causal order, whatever order the topics delivered them in), and the orders
they moved are written whole with :func:`~tickforge.trading.store.store_oms`, which is idempotent
on ``client_order_id``, the trail's ``seq`` and ``fill_id``. The offsets are committed after the
database commit; a record that cannot apply yet (a fill read before its order or its acceptance)
holds its partition's committed offset back until it has, so a restart reads it again. One that
waits longer than ``HOLD_S`` is a dead letter ``unknown_order``; one the OMS refuses is a dead
letter ``order_refused``. Outages and the offset discipline are
:class:`~tickforge.streaming.postgres_sink.PostgresSink`'s.

``orders.approved`` is not read: approval moves no order (it stays NEW until the venue answers).
"""

from __future__ import annotations

import logging
import time

import psycopg
from confluent_kafka import Message, TopicPartition

from tickforge.platform.contracts import JSON_ENCODER, DeadLetter
from tickforge.platform.io.kafka import marker_watermark, topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.platform.topics import FILLS, ORDER_EVENTS, ORDERS, ORDERS_REJECTED
from tickforge.streaming import metrics
from tickforge.streaming.codec import Undecodable, dead_letter_for, payload_text
from tickforge.streaming.order_messages import OrderMessage, decode_event, decode_fill, decode_order_message
from tickforge.streaming.postgres_sink import PostgresSink
from tickforge.trading.oms import ConflictingDuplicate
from tickforge.trading.order_feed import Decided, Entry, FeedRecord, OrderFeed, OrderMeta, RiskRefused, restore_stored
from tickforge.trading.store import PAPER_LIVE_ACCOUNT, ensure_oms_tables, read_oms, store_oms

log = logging.getLogger(__name__)

NAME = "oms-store"
# A record of an order that has not come by then never will (its source is read within seconds).
HOLD_S = 300.0
_SOURCES = (ORDERS, ORDERS_REJECTED, ORDER_EVENTS, FILLS)


class OmsStore(PostgresSink):
    NAME = NAME

    def __init__(self, settings: Settings, account: str = PAPER_LIVE_ACCOUNT) -> None:
        self.account = account
        self.rank = {topic_name(settings, t): i for i, t in enumerate(_SOURCES)}
        self.orders_topic, self.rejected_topic, self.events_topic, self.fills_topic = (
            topic_name(settings, t) for t in _SOURCES
        )
        super().__init__(settings, list(self.rank))
        self.waiting: list[Entry] = []  # read, not applicable yet; tag: (topic, first seen monotonic)

    def migrate(self, dsn: str) -> None:
        ensure_oms_tables(dsn, self.schema)

    def rewound(self) -> None:
        self.waiting = []  # read again from the committed offsets

    def store(self, conn: psycopg.Connection, msgs: list[Message]) -> int:
        now = time.monotonic()
        entries: list[Entry] = []
        positions: dict[tuple[str, int], int] = {}
        for msg, topic, partition, offset in self.read(msgs, positions):
            if marker_watermark(msg) is not None:
                continue
            try:
                record = self._decode(topic, msg)
            except Undecodable as exc:
                self._dead_letter(dead_letter_for(msg, exc.reason, topic, exc.detail))
                continue
            entries.append(Entry(record, (self.rank[topic], partition, offset), (topic, now)))
        pending = self.waiting + entries
        written = 0
        if pending:
            with conn.transaction():
                feed = OrderFeed()
                ids = sorted({e.client_order_id for e in pending})
                stored = read_oms(conn, self.schema, self.account, client_order_ids=ids)
                restore_stored(feed, stored.orders, stored.transitions, stored.fills)
                applied = feed.apply(pending)
                try:
                    if applied.touched:
                        with conn.transaction():
                            counts = store_oms(conn, self.schema, self.account, *feed.frames(applied.touched))
                        written = counts.orders_new + counts.orders_moved + counts.transitions_new + counts.fills_new
                except ConflictingDuplicate as exc:
                    # A bug upstream (one id, two contents): those records go aside, the rest flows on.
                    log.error("order records refused as a whole", extra={"error": str(exc)})
                    touched = applied.touched
                    applied.refused += [(e, str(exc)) for e in pending if e.client_order_id in touched]
            for entry, why in applied.refused:
                self._dead_letter(self._letter(entry, Reason.ORDER_REFUSED, why))
            self.waiting = []
            for entry in applied.waiting:
                if now - entry.tag[1] > HOLD_S:
                    self._dead_letter(
                        self._letter(entry, Reason.UNKNOWN_ORDER, f"no order to apply it to in {HOLD_S:.0f} s")
                    )
                else:
                    self.waiting.append(entry)
        self.dead_letters.flush(10)
        # Durable now: commit what was read, except where a waiting record must be read again.
        for entry in self.waiting:
            key = (entry.tag[0], entry.position[1])
            if key in positions:
                positions[key] = min(positions[key], entry.position[2])
        if positions:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False
            )
        metrics.MESSAGES_OUT.labels(worker=NAME).inc(written)
        return written

    def _decode(self, topic: str, msg: Message) -> FeedRecord:
        if topic == self.fills_topic:
            return decode_fill(msg.value())
        if topic == self.events_topic:
            return decode_event(msg.value())
        message = decode_order_message(msg.value())
        meta = order_meta(message)
        if topic == self.orders_topic:
            return Decided(message.order, meta)
        ts, rule = message.extra.get("risk_ts_ms"), message.extra.get("rule")
        if not isinstance(ts, int) or not isinstance(rule, str) or not rule:
            raise Undecodable(Reason.SCHEMA_VIOLATION, "a risk rejection names its risk_ts_ms and rule")
        return RiskRefused(message.order, meta, ts, rule)

    def _letter(self, entry: Entry, reason: Reason, detail: str) -> DeadLetter:
        record = entry.record
        return DeadLetter(
            reason=reason,
            source=entry.tag[0],
            payload=payload_text(JSON_ENCODER.encode(record)),
            partition=entry.position[1],
            offset=entry.position[2],
            detail=detail,
            ts_ms=getattr(record, "ts_ms", None),
        )

    def _dead_letter(self, letter: DeadLetter) -> None:
        metrics.DEAD_LETTERS.labels(reason=letter.reason).inc()
        self.dead_letters.produce(self.dead_letter_topic, JSON_ENCODER.encode(letter.bounded()), letter.source)


def order_meta(message: OrderMessage) -> OrderMeta:
    """What the runner's order message says of its pick beyond the order."""

    def text(key: str) -> str | None:
        value = message.extra.get(key)
        return value if isinstance(value, str) and value else None

    return OrderMeta(text("strategy_name"), text("book"), text("timeframe"), str(message.bucket))
