"""A consumer-group member that writes what it reads into PostgreSQL, at least once, idempotently.

The loop the stores share: read with ``read_committed``, write a poll in one database transaction
(the subclass's :meth:`PostgresSink.store`, idempotent on its keys), and commit the Kafka offsets
only after the database commit. A redelivery after a crash writes the same rows again, which
changes nothing.

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
from collections.abc import Iterator

import psycopg
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from tickforge.platform.io.kafka import make_consumer, make_producer, topic_name
from tickforge.platform.io.postgres import OUTAGE_ERRORS, connect_writer, retry_on_outage
from tickforge.platform.retry import Backoff
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER
from tickforge.streaming import metrics

log = logging.getLogger(__name__)


class PostgresSink:
    """Subclasses name the worker and its topics, create their tables and write a poll."""

    NAME = ""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.settings = settings
        self.schema = settings.postgres.schema_name
        self.topics = topics
        self.consumer = make_consumer(settings, f"{settings.kafka.topic_prefix}{self.NAME}")
        self.dead_letters = make_producer(settings)
        self.dead_letter_topic = topic_name(settings, DEAD_LETTER)
        self._stop = False

    def migrate(self, dsn: str) -> None:
        """Create or update the tables (idempotent)."""
        raise NotImplementedError

    def store(self, conn: psycopg.Connection, msgs: list[Message]) -> int:
        """Write one poll in one database transaction, then commit its offsets; the rows written."""
        raise NotImplementedError

    @staticmethod
    def read(msgs: list[Message], positions: dict[tuple[str, int], int]) -> Iterator[tuple[Message, str, int, int]]:
        """A poll's messages with their topic, partition and offset (consume errors logged,
        end-of-partition events passed over); ``positions`` gets each partition's next offset."""
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"error": str(err)})
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None, "a consumed message's position"
            positions[(topic, partition)] = offset + 1
            yield msg, topic, partition, offset

    def rewound(self) -> None:
        """Reading goes back to the committed offsets: forget what was read past them."""

    def stop(self, *_: object) -> None:
        self._stop = True

    def run(self, max_idle_s: float | None = None) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        dsn = self.settings.postgres.dsn.get_secret_value()
        backoff = Backoff(initial_s=0.5, cap_s=15.0)
        stopping = lambda: self._stop  # noqa: E731
        liveness = metrics.WORKER_LIVENESS.labels(worker=self.NAME)

        def wait_alive(seconds: float) -> None:
            liveness.set(time.time())
            time.sleep(seconds)

        def migrated() -> bool:
            self.migrate(dsn)
            return True

        if retry_on_outage(migrated, backoff, wait_alive, stopping) is None:
            return
        self.consumer.subscribe(self.topics)
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
            metrics.WORKER_LIVENESS.labels(worker=self.NAME).set(time.time())  # waiting out an outage is not a hang
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
            self.rewound()
            return
