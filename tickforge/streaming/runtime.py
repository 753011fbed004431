"""Exactly-once consume-transform-produce, shared by the stateful workers.

Each input partition has a :class:`PartitionTask` (the kernel's state for that partition). Output
and input offsets are committed in one Kafka transaction. The committed offset is not the consumer
position but the oldest input message still contributing to an open window (``lo``); the offset
metadata carries the watermark as it stood before ``lo`` and the position ``hi`` reached. After a
crash or a rebalance the new owner replays ``[lo, hi)`` from that watermark with its output
suppressed (it was committed already), which rebuilds the open windows exactly, then goes on.

Scaling out: the instances of a worker are the members of one consumer group (cooperative-sticky
assignment, so a rebalance moves only the partitions it must; static membership, so a restarted
instance takes its partitions back at once). The loop serves the consumer, where rebalances happen,
at a bounded interval even while it works through a backlog, and only between transactions: a
partition leaves at a transaction boundary, everything processed for it committed, the rest read
again by its next owner from the checkpoint. Inside an instance each partition has a backlog of its
own, taken round robin in bounded slices, so no partition's lag grows while another's shrinks.
The Kafka clients come from factories (the real ones by default), so the loop runs on fakes too.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar, cast

import msgspec
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from tickforge.platform.bars.watermark import NO_WATERMARK, wall_ms
from tickforge.platform.contracts import JSON_ENCODER, DeadLetter
from tickforge.platform.io.kafka import (
    Headers as KafkaHeaders,
)
from tickforge.platform.io.kafka import (
    StopWaiting,
    encode_marker,
    make_group_consumer,
    make_producer,
    marker_headers,
    retry_retriable,
    topic_name,
)
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER
from tickforge.streaming import metrics
from tickforge.streaming.codec import payload_text

log = logging.getLogger(__name__)


# Every blocking client call is bounded; a broker that is away is waited for (with backoff) for
# at most the outage budget, after which the worker exits for its supervisor.
CALL_TIMEOUT_S = 10.0
OUTAGE_BUDGET_S = 120.0
# Failover in seconds: a member that stops heartbeating leaves the group after the session timeout,
# and its open transaction (which holds back every read_committed reader of its output partitions
# and the committed offsets its successor reads) is aborted by the coordinator after the
# transaction timeout. A transaction lasts tens of milliseconds, so both can be short.
SESSION_TIMEOUT_MS = 3_000
HEARTBEAT_INTERVAL_MS = 500
TRANSACTION_TIMEOUT_MS = 2_500
# The consumer is served (rebalance callbacks, the fetch queue) at least this often while a backlog
# is worked through, so a new instance gets its partitions within a heartbeat or two.
SERVE_INTERVAL_S = 0.05
# Per-partition fetches in small pieces: the client's queue then interleaves the partitions, so the
# round robin has every partition's input at hand, not one partition's 10 MB ahead of the rest.
MAX_PARTITION_FETCH_BYTES = 1_048_576
LAG_INTERVAL_S = 1.0
# A partition with this many messages waiting in its backlog is paused (the client drops what it
# prefetched of it and fetches it again from there on resume), so the messages of the others,
# queued behind it in the client's one queue, come through: a hot partition cannot starve the rest.
PARTITION_BACKLOG_MAX = 500
REFENCED_WINDOW_S = 30.0
_FIRST: tuple[str, int] = ("", -1)  # sorts before every (topic, partition)
T = TypeVar("T")
Headers = KafkaHeaders | None


class _Stopped(Exception):
    """SIGTERM arrived while waiting for the broker."""


class Checkpoint(msgspec.Struct, frozen=True):
    lo_wm: int  # watermark before the message at the committed offset
    hi: int  # consumer position when committed: [lo, hi) is replayed silently
    # Watermark at hi. Replaying [lo, hi) from lo_wm rebuilds it from the input, except where it
    # moved without input (an idle advance): the replay ends by moving there, silently.
    hi_wm: int | None = None
    # How far an idle advance could still take the watermark at hi (it depends on input before
    # lo, which the replay does not read): a restored task idles exactly as the one before it.
    idle_limit: int | None = None


_CHECKPOINT_DECODER = msgspec.json.Decoder(Checkpoint)


class ProducerClient(Protocol):
    """The transactional producer calls the runtime makes (confluent_kafka.Producer's)."""

    def init_transactions(self, timeout: float) -> None: ...
    def begin_transaction(self) -> None: ...
    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        *,
        headers: Any = None,
    ) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float
    ) -> None: ...
    def commit_transaction(self, timeout: float) -> None: ...
    def abort_transaction(self, timeout: float) -> None: ...
    def flush(self, timeout: float) -> int: ...


Rebalance = Callable[[Any, list[TopicPartition]], None]


class ConsumerClient(Protocol):
    """The group consumer calls the runtime makes (confluent_kafka.Consumer's)."""

    def subscribe(self, topics: list[str], on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance) -> None: ...
    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...
    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def consumer_group_metadata(self) -> Any: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...
    def close(self) -> None: ...


# The real clients (make_group_consumer, make_producer) by default; fakes in unit tests.
ConsumerFactory = Callable[..., ConsumerClient]  # (settings, group_id, **librdkafka config)
ProducerFactory = Callable[..., ProducerClient]  # (settings, transactional_id=..., **librdkafka config)


@dataclass
class Output:
    """What a task emits during one transaction; dropped while replaying."""

    producer: ProducerClient
    partition: int
    replaying: bool = False
    produced: int = 0
    dead_letter_topic: str = ""
    _refusal: str = ""
    # (worker, timeframe, wall ms when the watermark passed, bars): observed once committed
    latencies: list[tuple[str, str, int, int]] = field(default_factory=list)

    def send(self, topic: str, key: bytes | str | None, value: bytes, headers: Headers = None) -> None:
        if self.replaying:
            return
        self._send(topic, key, value, headers, self.partition)

    def send_decided(self, topic: str, key: str, value: bytes, partition: int) -> None:
        """Emit even while replaying, to ``partition``: for a task that knows from the committed
        output itself what was emitted before (the pair book's cursors), where a record may be due
        while its input is being replayed."""
        self._send(topic, key, value, None, partition)

    @contextmanager
    def replayed(self, replaying: bool) -> Iterator[None]:
        """Emit as if the input were (or were not) replayed, for a task that buffers its input
        and emits for it later (the replay region may end inside its buffer)."""
        current, self.replaying = self.replaying, replaying
        try:
            yield
        finally:
            self.replaying = current

    def _send(self, topic: str, key: bytes | str | None, value: bytes, headers: Headers, partition: int) -> None:
        if self._produce(topic, key, value, headers, partition):
            return
        # The broker's client refused it before it left (over the message size, say): what the
        # input produced is kept in the dead letter, and the partition goes on.
        self.dead_letter(
            DeadLetter(
                reason=Reason.UNPRODUCIBLE,
                source=topic,
                payload=payload_text(value),
                symbol=key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
                partition=self.partition,
                detail=self._refusal,
            )
        )

    def marker(self, topic: str, watermark_ms: int) -> None:
        self.send(topic, None, encode_marker(watermark_ms), marker_headers())

    def dead_letter(self, letter: DeadLetter) -> None:
        if self.replaying:
            return
        metrics.DEAD_LETTERS.labels(reason=letter.reason).inc()
        letter = letter.bounded()
        if not self._produce(self.dead_letter_topic, letter.source, JSON_ENCODER.encode(letter), None, self.partition):
            log.error("dead letter refused", extra={"reason": letter.reason, "error": self._refusal})

    def _produce(self, topic: str, key: bytes | str | None, value: bytes, headers: Headers, partition: int) -> bool:
        """Produce, waiting while the client's queue is full; False if the client refuses it."""
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition, headers=headers)
            except BufferError:
                self.producer.poll(0.05)  # full queue: let deliveries drain, then try again
                continue
            except KafkaException as exc:
                self._refusal = str(exc)
                return False
            self.produced += 1
            if self.produced % 10_000 == 0:
                self.producer.poll(0)
            return True


class PartitionTask(Protocol):
    """A kernel's state for one input partition, driven by the runtime."""

    @property
    def watermark(self) -> int: ...

    def process(self, msg: Message, out: Output) -> int:
        """Apply one input message; return the watermark at which it stops being needed."""
        ...

    def close(self, out: Output) -> None:
        """Emit what the current watermark has closed (and forward the watermark)."""
        ...

    def idle(self, out: Output) -> None:
        """Called when the partition had no input for a while (idle advance)."""
        ...

    @property
    def idle_limit(self) -> int:
        """How far an idle advance may still take the watermark (recorded in the checkpoint)."""
        ...

    @property
    def accepting(self) -> bool:
        """False while the task holds as much input as it may (a merge waiting for its other
        inputs): its messages stay in the backlog, and the partition is paused once that is full."""
        ...

    def restore(self, watermark: int, idle_limit: int | None, out: Output) -> None:
        """End of a replay: move to the watermark the partition had reached without input (an idle
        advance; ``out`` is replaying, so the windows it closes emit nothing), and take the idle
        limit it had then (None: not recorded), so a restored task idles exactly as a fresh one."""
        ...


class InputDrivenTask:
    """For a task whose watermark moves only with its input (forwarded markers): no idle advance,
    nothing to restore beyond what the replay rebuilds."""

    accepting = True

    @property
    def idle_limit(self) -> int:
        return NO_WATERMARK

    def idle(self, out: Output) -> None:
        """Upstream forwards its idle advance as markers: nothing to do here."""

    def restore(self, watermark: int, idle_limit: int | None, out: Output) -> None:
        """The replay rebuilt everything: the watermark moves only with input."""


@dataclass
class _Track:
    task: PartitionTask
    replay_until: int  # offsets below this were processed and committed before
    position: int = -1
    pending: deque[tuple[int, int, int]] = field(default_factory=deque)  # offset, wm before, needed until
    last_input_ms: int = field(default_factory=wall_ms)
    dirty: bool = False
    # The consumer has read everything the partition holds (a partition-EOF event came after the
    # last message). Idleness counts only from there: a partition whose input is still on its way
    # (a slow first fetch after a restart, a backlog) is behind, not idle, and advancing its
    # watermark with the wall clock would turn that input into late ticks.
    at_end: bool = False
    restoring: bool = False  # restored from a checkpoint, until the replay has reached hi
    restore_wm: int | None = None  # the checkpoint's hi_wm
    restore_idle_limit: int | None = None  # the checkpoint's idle_limit
    backlog: deque[Message] = field(default_factory=deque)  # consumed, not processed yet
    next_offset: int = -1  # after the last message taken into the backlog
    paused: bool = False

    def idle_due(self, now_ms: int, idle_timeout_ms: int) -> bool:
        return self.at_end and self.position >= self.replay_until and now_ms - self.last_input_ms >= idle_timeout_ms

    def checkpoint(self) -> tuple[int, Checkpoint]:
        wm = self.task.watermark
        while self.pending and self.pending[0][2] <= wm:
            self.pending.popleft()
        # Still replaying what an earlier instance emitted: the next one must suppress up to the
        # same point, and end at the watermark (and idle limit) that instance reached there.
        hi = max(self.position, self.replay_until)
        if self.restoring:
            hi_wm = wm if self.restore_wm is None else max(wm, self.restore_wm)
            idle_limit = self.restore_idle_limit
        else:
            hi_wm, idle_limit = wm, self.task.idle_limit
        if self.pending:
            offset, wm_before, _ = self.pending[0]
            return offset, Checkpoint(wm_before, hi, hi_wm, idle_limit)
        return self.position, Checkpoint(wm, hi, hi_wm, idle_limit)


def _real_producer(settings: Settings, transactional_id: str, **config: Any) -> ProducerClient:
    return make_producer(settings, transactional_id=transactional_id, **config)


TaskFactory = Callable[[int, int], PartitionTask]  # (partition, start watermark)
PortFactory = Callable[[str, int, int], PartitionTask]  # (topic, partition, start watermark)
TrackKey = tuple[str, int]  # (input topic, partition)


class TransactionalWorker:
    """Consumer-group member running a task per assigned input partition inside transactions.

    ``input_topic`` one topic (``task_factory(partition, start watermark)``), or several
    co-partitioned ones (``task_factory(topic, partition, start watermark)``, e.g. the ports of
    :func:`tickforge.streaming.merge.merged_ports`): then partition ``p`` of every input goes to
    the same instance (range assignment), each with its own checkpoint."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        input_topic: str | Sequence[str],
        task_factory: TaskFactory | PortFactory,
        instance_id: str = "0",
        batch_size: int = 2_000,
        idle_check_ms: int = 200,
        transaction_budget_ms: int = 15,
        latency_budget_ms: int = 3,
        slice_messages: int = 16,
        consumer_factory: ConsumerFactory | None = None,
        producer_factory: ProducerFactory | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        topics = [input_topic] if isinstance(input_topic, str) else list(input_topic)
        self.input_topics = [topic_name(settings, t) for t in topics]
        self.input_topic = self.input_topics[0]
        if len(self.input_topics) == 1:
            single = cast(TaskFactory, task_factory)
            self._make_task: PortFactory = lambda topic, partition, wm: single(partition, wm)
        else:
            self._make_task = cast(PortFactory, task_factory)
        self.batch_size = batch_size
        # Work per transaction is bounded in time, not messages: a column batch holds thousands
        # of ticks, and a bar's emit latency includes the rest of its transaction.
        self.transaction_budget_ms = transaction_budget_ms
        self.latency_budget_ms = latency_budget_ms
        self.slice_messages = slice_messages
        self._queued = 0  # messages in the partitions' backlogs
        self._resume_from = _FIRST  # the partition whose turn comes first in the next transaction
        # The last consume() returned less than it asked for: the client's queue was drained, so
        # nothing that has arrived is waiting outside the backlogs.
        self._drained = False
        self._drained_at = 0.0
        self._served_at = 0.0
        self._lag_at = 0.0
        self.idle_check_ms = idle_check_ms
        self.group_id = f"{settings.kafka.topic_prefix}{name}"
        self.instance_id = instance_id
        self._consumer_factory: ConsumerFactory = consumer_factory or make_group_consumer
        self.consumer: ConsumerClient = self._new_consumer()
        self.transactional_id = f"{self.group_id}-{instance_id}"
        self._producer_factory: ProducerFactory = producer_factory or _real_producer
        self.producer: ProducerClient = self._new_producer()
        self.dead_letter_topic = topic_name(settings, DEAD_LETTER)
        self.tracks: dict[TrackKey, _Track] = {}
        self._stop = False
        self._liveness: Any = None
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="kafka-call")
        self._last_idle_check = wall_ms()
        self._fenced_at = -REFENCED_WINDOW_S
        self._transaction_began = time.monotonic()  # when the open (or last) transaction began

    def _new_consumer(self) -> ConsumerClient:
        return self._consumer_factory(
            self.settings,
            self.group_id,
            **{
                # Merged inputs need partition p of every input in one instance: range assignment
                # gives that (co-partitioned topics, one range each); it is eager, so a rebalance
                # hands over every partition at a transaction boundary.
                "partition.assignment.strategy": "cooperative-sticky" if len(self.input_topics) == 1 else "range",
                # Static membership: a restarted instance (same id) takes its partitions back at
                # once; a member that vanished is replaced after the (short) session timeout.
                "group.instance.id": f"{self.group_id}-{self.instance_id}",
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                "max.partition.fetch.bytes": MAX_PARTITION_FETCH_BYTES,
                # End-of-partition events tell a caught-up partition (may idle) from a lagging one.
                "enable.partition.eof": True,
            },
        )

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            self.input_topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )

    def _rejoin(self, error: KafkaError) -> None:
        """The consumer is in a fatal state (fenced: after an outage the coordinator gave its
        instance id to a new member id of the same consumer): a new consumer joins in its place.
        This happens between transactions, so nothing is lost: the tasks go, and the partitions
        are read again from their checkpoints."""
        log.warning("consumer replaced", extra={"worker": self.name, "error": str(error)})
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.info("closing the fatal consumer failed", extra={"worker": self.name, "error": str(exc)})
        self.tracks.clear()
        self._queued = 0
        self.consumer = self._new_consumer()
        self._subscribe()

    def _new_producer(self) -> ProducerClient:
        return self._producer_factory(
            self.settings,
            transactional_id=self.transactional_id,
            # The commit flushes anyway: lingering would only add to every bar's latency. A
            # transaction begun right after a commit meets CONCURRENT_TRANSACTIONS until the
            # coordinator has written the markers; the client retries after retry.backoff.ms,
            # 100 ms by default, which was the whole p99 of a bar's emit latency.
            **{"transaction.timeout.ms": TRANSACTION_TIMEOUT_MS, "linger.ms": 1, "retry.backoff.ms": 5},
        )

    # -- assignment (cooperative: each callback gets only the partitions that change) ----------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        committed = self._retrying(
            "read committed offsets", lambda: self.consumer.committed(partitions, timeout=CALL_TIMEOUT_S)
        )
        self._install(committed)

    def _install(self, committed: list[TopicPartition]) -> None:
        """A fresh task per partition, from the checkpoint committed with its offset."""
        for tp in committed:
            lo_wm, hi = NO_WATERMARK, -1
            point = _CHECKPOINT_DECODER.decode(tp.metadata) if tp.metadata else None
            if point is not None:
                lo_wm, hi = point.lo_wm, point.hi
            track = _Track(self._make_task(tp.topic, tp.partition, lo_wm), replay_until=hi)
            track.position = tp.offset if tp.offset >= 0 else -1
            self.tracks[(tp.topic, tp.partition)] = track
            if point is not None:
                track.restoring = True
                track.restore_wm = point.hi_wm
                track.restore_idle_limit = point.idle_limit
                if track.position >= hi:  # nothing to replay: restored at once
                    self._restore(track, self._output(tp.partition))
            log.info(
                "assigned",
                extra={
                    "worker": self.name,
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": tp.offset,
                    "replay_until": hi,
                    "watermark": lo_wm,
                },
            )

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions handed over (or lost). Called only between transactions, so what was
        processed for them is committed; what was consumed but not processed is dropped, and the
        next owner reads it again from the checkpoint."""
        for tp in partitions:
            track = self.tracks.pop((tp.topic, tp.partition), None)
            if track is not None:
                self._queued -= len(track.backlog)
            try:
                metrics.CONSUMER_LAG.remove(self.name, self._lag_label(tp.topic, tp.partition))  # its new owner's
            except KeyError:
                pass
            log.info("revoked", extra={"worker": self.name, "topic": tp.topic, "partition": tp.partition})

    # -- loop -------------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self._stop = True

    def run(self, max_idle_s: float | None = None) -> None:
        """Run until SIGTERM/SIGINT (or ``max_idle_s`` without input, for batch use)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self._liveness = metrics.WORKER_LIVENESS.labels(worker=self.name)
        try:
            self._retrying("init transactions", lambda: self.producer.init_transactions(CALL_TIMEOUT_S))
        except _Stopped:
            return
        self._subscribe()
        last_input = time.monotonic()
        try:
            while not self._stop:
                self._liveness.set(time.time())
                if self.serve():
                    last_input = time.monotonic()
                self.step()
                self._observe_lag()
                if max_idle_s is not None and time.monotonic() - last_input > max_idle_s:
                    break
        except _Stopped:
            log.info("stopped while the broker was away", extra={"worker": self.name})
        finally:
            self.consumer.close()
            try:
                self.producer.flush(10)
            except KafkaException as exc:  # an open transaction is aborted by the coordinator
                log.warning("flush at exit failed", extra={"worker": self.name, "error": str(exc)})

    def serve(self) -> bool:
        """Serve the consumer (between transactions: rebalances happen here) when the backlogs are
        empty or ``SERVE_INTERVAL_S`` has passed; its messages join their partitions' backlogs.
        The backlogs stay within ``batch_size`` messages (one more per call at most, as the call
        must hand out something). True when messages came."""
        now = time.monotonic()
        # Backlogs of tasks that take no input now do not count: the others' input must come.
        waiting = self._takeable()
        if waiting and now - self._served_at < SERVE_INTERVAL_S:
            return False
        wanted = max(1, min(self.batch_size, self.batch_size - waiting))
        msgs = self.consumer.consume(wanted, timeout=0.0 if waiting else 0.05)
        self._served_at = self._drained_at = time.monotonic()
        self._drained = len(msgs) < wanted
        for msg in msgs:
            err = msg.error()
            if err is not None and (err.fatal() or err.code() == KafkaError._FATAL):
                self._rejoin(err)
                return True
            track = self.tracks.get((cast(str, msg.topic()), cast(int, msg.partition())))
            if track is None:  # revoked since it was fetched
                continue
            if err is None:
                offset = cast(int, msg.offset())
                if offset < track.next_offset:  # fetched again after a pause: taken already
                    continue
                track.next_offset = offset + 1
            track.backlog.append(msg)
            self._queued += 1
        self._throttle()
        return bool(msgs)

    def _takeable(self) -> int:
        """Messages waiting in the backlogs of tasks that take input now."""
        if self._queued == 0:
            return 0
        return sum(len(t.backlog) for t in self.tracks.values() if t.backlog and t.task.accepting)

    def _throttle(self) -> None:
        """Pause the partitions whose backlog is full, resume those that have worked it down."""
        pause, resume = [], []
        for (topic, partition), track in self.tracks.items():
            waiting = len(track.backlog)
            if not track.paused and waiting >= PARTITION_BACKLOG_MAX:
                track.paused = True
                pause.append(TopicPartition(topic, partition))
            elif track.paused and waiting <= PARTITION_BACKLOG_MAX // 4:
                track.paused = False
                resume.append(TopicPartition(topic, partition))
        if pause:
            self.consumer.pause(pause)
        if resume:
            self.consumer.resume(resume)

    # -- riding out the broker ---------------------------------------------------------------
    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """``call``, waiting out a broker that is away for at most ``OUTAGE_BUDGET_S``."""

        def still_alive() -> None:
            if self._liveness is not None:
                self._liveness.set(time.time())  # waiting out an outage is not a hung loop

        try:
            return retry_retriable(what, call, OUTAGE_BUDGET_S, lambda: self._stop, still_alive)
        except StopWaiting as exc:
            raise _Stopped from exc

    def _commit(self, offsets: list[TopicPartition]) -> bool:
        """Commit the transaction with the input offsets; False when it had to be aborted (then
        every partition is read again from its committed checkpoint, so nothing is lost or
        doubled). A fatal error (fenced: another instance took over) is raised: the process
        exits and its supervisor starts it again."""
        # One bounded attempt each: a transaction that could not commit within the call timeout
        # has most likely been timed out by its coordinator already (the broker was away), and
        # retrying the same call then only waits. Aborting and reading the input again is exact.
        try:
            if offsets:
                metadata = self.consumer.consumer_group_metadata()
                self._bounded(lambda: self.producer.send_offsets_to_transaction(offsets, metadata, CALL_TIMEOUT_S))
            self.producer.commit_transaction(CALL_TIMEOUT_S)
            return True
        except KafkaException as exc:
            self._recover(exc)
            return False

    def _bounded(self, call: Callable[[], None]) -> None:
        """``call`` on a helper thread, given up after the call timeout plus a grace: librdkafka's
        AddOffsetsToTxn can block past its own timeout while the group coordinator is away (its
        EndTxn honours the timeout, and stays on the main thread: each hop costs latency). A
        call given up on leaves its producer to that thread; the caller replaces the producer
        (the same transactional id fences the old one)."""
        future = self._calls.submit(call)
        try:
            future.result(CALL_TIMEOUT_S + 5)
        except FutureTimeout:
            self._calls.shutdown(wait=False)  # its thread stays blocked with the old producer
            self._calls = ThreadPoolExecutor(1, thread_name_prefix="kafka-call")
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "transactional call hung", fatal=True)) from None

    def _recover(self, exc: KafkaException) -> None:
        """After a failed transaction: abort it, or, when the producer is in a fatal state (a
        coordinator that lost or timed out the transaction during an outage), start a new producer
        under the same transactional id. Fenced twice in a row by something a timeout does not
        explain means another process holds that id: exit for it."""
        error = exc.args[0]
        if error.code() == KafkaError._FENCED or error.code() == KafkaError.PRODUCER_FENCED:
            # A transaction its coordinator timed out (the loop stalled on a loaded machine, or the
            # broker was away, longer than the transaction timeout) fences the producer too: the
            # coordinator bumped the epoch. That happens as often as the stalls do, so a new
            # producer is tried every time. A transaction fenced inside the timeout was fenced by
            # another process with the same id: fenced that way twice in a row, exit for it.
            now = time.monotonic()
            timed_out = now - self._transaction_began >= TRANSACTION_TIMEOUT_MS / 1000
            if not timed_out and now - self._fenced_at < REFENCED_WINDOW_S:
                log.error("fenced", extra={"worker": self.name, "error": str(exc)})
                raise exc
            self._fenced_at = now
        if error.fatal():
            log.warning("producer re-initialised", extra={"worker": self.name, "error": str(exc)})
            self.producer = self._new_producer()
            self._retrying("init transactions", lambda: self.producer.init_transactions(CALL_TIMEOUT_S))
            self._rewind()
            return
        self._abort_and_rewind(exc)

    def _abort_and_rewind(self, cause: KafkaException) -> None:
        """Abort the open transaction and go back to the committed checkpoints: its output is
        discarded, and the input it consumed is read again by fresh tasks."""
        log.warning("transaction aborted", extra={"worker": self.name, "error": str(cause)})
        metrics.TRANSACTIONS_ABORTED.labels(worker=self.name).inc()
        try:
            self._retrying("abort", lambda: self.producer.abort_transaction(CALL_TIMEOUT_S))
        except KafkaException as again:
            if not again.args[0].fatal():
                raise
            self._recover(again)
            return
        self._rewind()

    def _rewind(self) -> None:
        """Fresh tasks from the committed checkpoints, the consumer back at those offsets."""
        partitions = [TopicPartition(topic, p) for topic, p in sorted(self.tracks)]
        paused = [TopicPartition(topic, p) for (topic, p), t in self.tracks.items() if t.paused]
        self.tracks.clear()
        self._queued = 0
        if not partitions:
            return
        if paused:
            self._retrying("resume", lambda: self.consumer.resume(paused))
        committed = self._retrying(
            "read committed offsets", lambda: self.consumer.committed(partitions, timeout=CALL_TIMEOUT_S)
        )
        self._install(committed)
        for tp in committed:
            start = TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            self._retrying("seek", partial(self.consumer.seek, start))

    # -- one transaction ----------------------------------------------------------------------
    def step(self) -> None:
        """One transaction: backlog messages until the time budget is spent, plus idle work."""
        check_idle = wall_ms() - self._last_idle_check >= self.idle_check_ms
        if not self._takeable() and not check_idle:
            return
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            self._recover(exc)
            return
        began = self._transaction_began = time.monotonic()
        outputs: dict[TrackKey, Output] = {}
        self._process_backlogs(outputs, began)
        self._close_processed(outputs)
        if check_idle:
            self._advance_idle(outputs)
        offsets = self._checkpoints()
        if not offsets and not any(o.produced for o in outputs.values()):
            self._retrying("abort", lambda: self.producer.abort_transaction(CALL_TIMEOUT_S))
            return
        committing = time.monotonic()
        if not self._commit(offsets):
            return
        self._observe_commit(outputs, began, committing)

    def _process_backlogs(self, outputs: dict[TrackKey, Output], began: float) -> None:
        """The partitions' backlogs round robin, ``slice_messages`` at a turn, until the time
        budget is spent (and at least a few messages, so a slow call never starves the loop)."""
        deadline = began + self.transaction_budget_ms / 1000
        # A task that holds as much input as it may (a merge waiting for its other inputs) takes
        # no more now: its messages wait in the backlog, the partition paused once that is full.
        order = sorted(k for k, t in self.tracks.items() if t.backlog and t.task.accepting)
        first = next((i for i, k in enumerate(order) if k >= self._resume_from), 0)
        turns = deque(order[first:] + order[:first])
        taken = 0
        latency_due = False
        while turns:
            key = turns.popleft()
            track = self.tracks[key]
            for _ in range(self.slice_messages):
                if not track.backlog or not track.task.accepting:
                    break
                msg = track.backlog.popleft()
                self._queued -= 1
                taken += 1
                out = self._take(key, track, msg, outputs)
                if out is not None and out.latencies and not latency_due:
                    # Bars are waiting in this transaction: commit soon rather than fill the budget.
                    latency_due = True
                    deadline = min(deadline, time.monotonic() + self.latency_budget_ms / 1000)
                if (taken >= 4 or latency_due) and time.monotonic() >= deadline:
                    if track.backlog:
                        turns.append(key)
                    self._resume_from = turns[0] if turns else _FIRST
                    return
            if track.backlog and track.task.accepting:
                turns.append(key)
        self._resume_from = _FIRST

    def _take(self, key: TrackKey, track: _Track, msg: Message, outputs: dict[TrackKey, Output]) -> Output | None:
        """One message of a partition's backlog: a data message is processed (its Output returned),
        an end-of-partition event marks the partition caught up."""
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                track.at_end = True
            else:
                log.warning("consume error", extra={"worker": self.name, "error": str(err)})
            return None
        track.at_end = False
        out = outputs.get(key)
        if out is None:
            out = outputs[key] = self._output(key[1])
        self._process_one(track, msg, out)
        return out

    def _close_processed(self, outputs: dict[TrackKey, Output]) -> None:
        now = wall_ms()
        for key, out in outputs.items():
            track = self.tracks[key]
            track.task.close(out)  # suppressed when the last message was a replayed one
            out.replaying = False
            track.dirty = True
            track.last_input_ms = now

    def _advance_idle(self, outputs: dict[TrackKey, Output]) -> None:
        """Idle advance for the partitions that are caught up and quiet. Idle means caught up with
        nothing left to read: never while input waits to be processed. The drain must be recent:
        a backlog that took seconds let new input queue up meanwhile."""
        drained = self._drained and time.monotonic() - self._drained_at < self.idle_check_ms / 1000
        if self._queued or not drained:
            return
        now = self._last_idle_check = wall_ms()
        for key, track in self.tracks.items():
            if key in outputs or not track.idle_due(now, self.settings.streaming.idle_timeout_ms):
                continue
            out = outputs[key] = self._output(key[1])
            wm = track.task.watermark
            track.task.idle(out)
            track.dirty |= track.task.watermark != wm

    def _checkpoints(self) -> list[TopicPartition]:
        """The input offsets (with their checkpoints) of every partition that moved."""
        offsets = []
        for (topic, partition), track in self.tracks.items():
            if not track.dirty or track.position < 0:
                continue
            offset, point = track.checkpoint()
            offsets.append(TopicPartition(topic, partition, offset, metadata=msgspec.json.encode(point).decode()))
            track.dirty = False
        return offsets

    def _observe_commit(self, outputs: dict[TrackKey, Output], began: float, committing: float) -> None:
        committed_at = wall_ms()
        done = time.monotonic()
        metrics.TRANSACTION_MS.observe((self.name, "process"), (committing - began) * 1000)
        metrics.TRANSACTION_MS.observe((self.name, "commit"), (done - committing) * 1000)
        for out in outputs.values():
            metrics.MESSAGES_OUT.labels(worker=self.name).inc(out.produced)
            for worker, timeframe, passed_at, bars in out.latencies:
                metrics.EMIT_LATENCY.observe((worker, timeframe), committed_at - passed_at, bars)

    def _observe_lag(self) -> None:
        """Per assigned partition, input not processed yet (the high offset the client last saw
        minus the position), about once a second; no broker round trip."""
        now = time.monotonic()
        if now - self._lag_at < LAG_INTERVAL_S:
            return
        self._lag_at = now
        for (topic, partition), track in self.tracks.items():
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high >= 0 and track.position >= 0:
                lag = max(0, high - track.position)
                metrics.CONSUMER_LAG.labels(worker=self.name, partition=self._lag_label(topic, partition)).set(lag)

    def _lag_label(self, topic: str, partition: int) -> str:
        """A partition's lag label: its number, and its topic's too where the worker reads several."""
        return str(partition) if len(self.input_topics) == 1 else f"{topic}/{partition}"

    @property
    def by_partition(self) -> dict[int, _Track]:
        """The tracks by partition, for a worker of one input topic."""
        return {p: t for (topic, p), t in self.tracks.items() if topic == self.input_topic}

    def _output(self, partition: int) -> Output:
        return Output(self.producer, partition, dead_letter_topic=self.dead_letter_topic)

    def _process_one(self, track: _Track, msg: Message, out: Output) -> None:
        """Apply one message; when it moved the watermark, emit what closed at once, so a bar's
        latency is the rest of its transaction (bounded by the time budget)."""
        task = track.task
        offset = cast(int, msg.offset())
        if track.restoring and offset >= track.replay_until:
            self._restore(track, out)  # offset hi - 1 was not delivered (a control record)
        # Inside [lo, hi) everything was committed before: rebuild state, emit nothing.
        out.replaying = offset < track.replay_until
        wm_before = task.watermark
        try:
            needed_until = task.process(msg, out)
        except Exception as exc:
            # A worker never exits because of what a message holds: the message is dead-lettered
            # with the error and the partition moves past it (a replay does the same, silently).
            log.exception("message failed", extra={"worker": self.name, "partition": msg.partition(), "offset": offset})
            out.dead_letter(
                DeadLetter(
                    reason=Reason.PROCESSING_ERROR,
                    source=cast(str, msg.topic()),
                    payload=payload_text(msg.value()),
                    partition=msg.partition(),
                    offset=offset,
                    detail=f"{type(exc).__name__}: {exc}",
                )
            )
            needed_until = NO_WATERMARK
        if task.watermark > wm_before:
            task.close(out)
        if needed_until > task.watermark:
            track.pending.append((offset, wm_before, needed_until))
        track.position = offset + 1
        if track.restoring and track.position >= track.replay_until:
            self._restore(track, out)

    @staticmethod
    def _restore(track: _Track, out: Output) -> None:
        """End of the replay: the watermark and idle limit the partition had reached, no output."""
        track.restoring = False
        watermark = track.restore_wm if track.restore_wm is not None else track.task.watermark
        with out.replayed(True):
            track.task.restore(max(watermark, track.task.watermark), track.restore_idle_limit, out)
