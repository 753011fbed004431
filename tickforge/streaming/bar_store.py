"""Bar store: closed bars from Kafka into the golden tables in PostgreSQL.

Reads every bar topic with ``read_committed``, upserts a poll's bars in one database transaction
(replace whole, keyed by symbol and window_start), records the forwarded watermarks, and commits
the Kafka offsets only after the database commit. A redelivery after a crash rewrites identical
rows, so the tables hold each bar exactly once.

The outage handling and the offset discipline are :class:`~tickforge.streaming.postgres_sink.PostgresSink`'s.
"""

from __future__ import annotations

import logging

import msgspec
import psycopg
from confluent_kafka import Message, TopicPartition

from tickforge.platform.bars.timeframes import bar_timeframes
from tickforge.platform.contracts import JSON_ENCODER, Bar
from tickforge.platform.io.kafka import marker_watermark, topic_name
from tickforge.platform.io.postgres import apply_migrations, store_bars
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.platform.topics import bar_topic
from tickforge.streaming import metrics
from tickforge.streaming.codec import dead_letter_for, decode_bar
from tickforge.streaming.postgres_sink import PostgresSink

log = logging.getLogger(__name__)

NAME = "bar-store"


class BarStore(PostgresSink):
    NAME = NAME

    def __init__(self, settings: Settings) -> None:
        self.timeframes = bar_timeframes(settings.streaming.timeframes)
        self.topic_tf = {topic_name(settings, bar_topic(tf)): tf for tf in self.timeframes}
        super().__init__(settings, list(self.topic_tf))

    def migrate(self, dsn: str) -> None:
        apply_migrations(dsn, self.schema, self.timeframes)

    def store(self, conn: psycopg.Connection, msgs: list[Message]) -> int:
        bars: dict[str, dict[tuple[str, int], Bar]] = {}
        watermarks: dict[tuple[str, int], int] = {}
        positions: dict[tuple[str, int], int] = {}
        for msg, topic, partition, _ in self.read(msgs, positions):
            tf = self.topic_tf[topic]
            marker = marker_watermark(msg)
            if marker is not None:
                key = (tf, partition)
                watermarks[key] = max(marker, watermarks.get(key, marker))
                continue
            try:
                bar = decode_bar(msg.value() or b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                letter = dead_letter_for(msg, Reason.UNDECODABLE, topic, str(exc))
                self.dead_letters.produce(self.dead_letter_topic, JSON_ENCODER.encode(letter), topic)
                metrics.DEAD_LETTERS.labels(reason=Reason.UNDECODABLE).inc()
                continue
            # The latest version of a bar in this poll wins (a late correction replaces it).
            bars.setdefault(tf, {})[(bar.symbol, bar.window_start)] = bar
        stored = store_bars(conn, self.schema, {tf: by_key.values() for tf, by_key in bars.items()}, watermarks)
        for (tf, partition), wm in watermarks.items():  # durable now
            metrics.GOLDEN_WATERMARK.labels(timeframe=tf, partition=str(partition)).set(wm / 1000)
        self.dead_letters.flush(10)
        # Only now is the output durable: commit what was consumed.
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False)
        metrics.BARS_OUT.labels(worker=NAME, timeframe="all").inc(stored)
        return stored
