"""Bar store: closed bars from Kafka into the golden tables in PostgreSQL.

Reads every bar topic with ``read_committed``, upserts a poll's bars in one database transaction
(replace whole, keyed by symbol and window_start), records the forwarded watermarks, and commits
the Kafka offsets only after the database commit. A redelivery after a crash rewrites identical
rows, so the tables hold each bar exactly once.
"""

from __future__ import annotations

import logging
import signal
import time

import msgspec
import psycopg
from confluent_kafka import KafkaError, Message, TopicPartition

from tickforge.platform.contracts import JSON_ENCODER, Bar
from tickforge.platform.io.kafka import make_consumer, make_producer, marker_watermark, topic_name
from tickforge.platform.io.postgres import apply_migrations, record_watermark, upsert_bars
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER, bar_topic
from tickforge.streaming import metrics
from tickforge.streaming.codec import dead_letter_for, decode_bar

log = logging.getLogger(__name__)

NAME = "bar-store"


class BarStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = settings.postgres.schema_name
        self.timeframes = [tf for tf in settings.streaming.timeframes if tf != "10ms"]
        self.topic_tf = {topic_name(settings, bar_topic(tf)): tf for tf in self.timeframes}
        self.consumer = make_consumer(settings, f"{settings.kafka.topic_prefix}{NAME}")
        self.dead_letters = make_producer(settings)
        self.dead_letter_topic = topic_name(settings, DEAD_LETTER)
        self._stop = False

    def stop(self, *_: object) -> None:
        self._stop = True

    def run(self, max_idle_s: float | None = None) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        dsn = self.settings.postgres.dsn.get_secret_value()
        apply_migrations(dsn, self.schema, self.timeframes)
        self.consumer.subscribe(list(self.topic_tf))
        last_input = time.monotonic()
        with psycopg.connect(dsn) as conn:
            try:
                while not self._stop:
                    msgs = self.consumer.consume(5_000, timeout=0.2)
                    if msgs:
                        last_input = time.monotonic()
                        self.store(conn, msgs)
                    elif max_idle_s is not None and time.monotonic() - last_input > max_idle_s:
                        break
            finally:
                self.consumer.close()
                self.dead_letters.flush(10)

    def store(self, conn: psycopg.Connection, msgs: list[Message]) -> int:
        bars: dict[str, dict[tuple[str, int], Bar]] = {}
        watermarks: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"error": str(msg.error())})
                continue
            tf = self.topic_tf[msg.topic()]
            marker = marker_watermark(msg)
            if marker is not None:
                key = (tf, msg.partition())
                watermarks[key] = max(marker, watermarks.get(key, marker))
                continue
            try:
                bar = decode_bar(msg.value())
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                letter = dead_letter_for(msg, "undecodable", msg.topic(), str(exc))
                self.dead_letters.produce(self.dead_letter_topic, JSON_ENCODER.encode(letter), msg.topic())
                metrics.DEAD_LETTERS.labels(reason="undecodable").inc()
                continue
            # The latest version of a bar in this poll wins (a late correction replaces it).
            bars.setdefault(tf, {})[(bar.symbol, bar.window_start)] = bar
        stored = 0
        with conn.transaction():
            for tf, by_key in bars.items():
                stored += upsert_bars(conn, self.schema, tf, by_key.values())
            for (tf, partition), wm in watermarks.items():
                record_watermark(conn, self.schema, tf, partition, wm)
        self.dead_letters.flush(10)
        # Only now is the output durable: commit what was consumed.
        positions: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if msg.error() is None:
                positions[(msg.topic(), msg.partition())] = msg.offset() + 1
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False
        )
        metrics.BARS_OUT.labels(worker=NAME, timeframe="all").inc(stored)
        return stored
