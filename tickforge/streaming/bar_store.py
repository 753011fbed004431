"""Bar store: closed bars from Kafka into the golden tables in PostgreSQL.

Reads every bar topic with ``read_committed``, upserts a poll's bars in one database transaction
(replace whole, keyed by symbol and window_start), records the forwarded watermarks, and commits
the Kafka offsets only after the database commit. A redelivery after a crash rewrites identical
rows, so the tables hold each bar exactly once.

A database outage (restart, stop, network) does not end the process: the connection is opened
again with exponential backoff while the consumer keeps polling (paused, so it stays in its
group), and reading resumes from the committed offsets, so the poll whose write failed is read and
written again. The same rewind follows a failed offset commit (the rows are durable; rewriting
them is harmless).
"""

from __future__ import annotations

import logging
import signal
import time

import msgspec
import psycopg
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from tickforge.platform.bars.timeframes import bar_timeframes
from tickforge.platform.contracts import JSON_ENCODER, Bar
from tickforge.platform.io.kafka import make_consumer, make_producer, marker_watermark, topic_name
from tickforge.platform.io.postgres import OUTAGE_ERRORS, apply_migrations, connect_writer, retry_on_outage, store_bars
from tickforge.platform.reasons import Reason
from tickforge.platform.retry import Backoff
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
        self.timeframes = bar_timeframes(settings.streaming.timeframes)
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
        backoff = Backoff(initial_s=0.5, cap_s=15.0)
        stopping = lambda: self._stop  # noqa: E731
        liveness = metrics.WORKER_LIVENESS.labels(worker=NAME)

        def wait_alive(seconds: float) -> None:
            liveness.set(time.time())
            time.sleep(seconds)

        if (
            retry_on_outage(lambda: apply_migrations(dsn, self.schema, self.timeframes), backoff, wait_alive, stopping)
            is None
        ):
            return
        self.consumer.subscribe(list(self.topic_tf))
        last_input = time.monotonic()
        conn: psycopg.Connection | None = None
        reread = False  # a write failed: reread from the committed offsets once reconnected
        try:
            while not self._stop:
                liveness.set(time.time())
                if conn is None:
                    conn = retry_on_outage(lambda: connect_writer(dsn), backoff, self._poll_paused, stopping)
                    if conn is None:
                        break
                    if reread:
                        self._rewind()
                        reread = False
                msgs = self.consumer.consume(5_000, timeout=0.2)
                if msgs:
                    last_input = time.monotonic()
                    try:
                        self.store(conn, msgs)
                        backoff.reset()
                    except OUTAGE_ERRORS as exc:
                        log.warning(
                            "postgres write failed: reconnecting, then rereading from the committed offsets",
                            extra={"error": str(exc).strip()},
                        )
                        conn.close()
                        conn = None
                        self._pause()
                        reread = True
                    except KafkaException as exc:
                        log.warning(
                            "offset commit failed: rereading from the committed offsets", extra={"error": str(exc)}
                        )
                        self._rewind()
                elif max_idle_s is not None and time.monotonic() - last_input > max_idle_s:
                    break
        finally:
            if conn is not None:
                conn.close()
            self.consumer.close()
            self.dead_letters.flush(10)

    def _pause(self) -> None:
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(assigned)

    def _poll_paused(self, seconds: float) -> None:
        """Wait while the database is away, still polling so the consumer keeps its group
        membership. Whatever a rebalance hands out meanwhile is dropped: the rewind rereads it."""
        self._pause()
        deadline = time.monotonic() + seconds
        while not self._stop and (left := deadline - time.monotonic()) > 0:
            metrics.WORKER_LIVENESS.labels(worker=NAME).set(time.time())  # waiting out an outage is not a hang
            self.consumer.consume(1_000, timeout=min(left, 0.5))
            self._pause()

    def _rewind(self) -> None:
        """Every assigned partition back to its committed offset (the start where none is), then
        reading resumes: what was consumed but not committed is read again."""
        backoff = Backoff(initial_s=0.5, cap_s=10.0)
        while not self._stop:
            assigned = self.consumer.assignment()
            try:
                committed = self.consumer.committed(assigned, timeout=10) if assigned else []
                for tp in committed:
                    start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    self.consumer.seek(TopicPartition(tp.topic, tp.partition, start))
            except KafkaException as exc:
                log.warning("cannot read the committed offsets yet", extra={"error": str(exc)})
                self._poll_paused(backoff.next_delay())
                continue
            if assigned:
                self.consumer.resume(assigned)
            return

    def store(self, conn: psycopg.Connection, msgs: list[Message]) -> int:
        bars: dict[str, dict[tuple[str, int], Bar]] = {}
        watermarks: dict[tuple[str, int], int] = {}
        positions: dict[tuple[str, int], int] = {}
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"error": str(err)})
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None, "a consumed message's position"
            positions[(topic, partition)] = offset + 1
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
