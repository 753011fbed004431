"""Exactly-once consume-transform-produce, shared by the stateful workers.

Each input partition has a :class:`PartitionTask` (the kernel's state for that partition). Output
and input offsets are committed in one Kafka transaction. The committed offset is not the consumer
position but the oldest input message still contributing to an open window (``lo``); the offset
metadata carries the watermark as it stood before ``lo`` and the position ``hi`` reached. After a
crash or a rebalance the new owner replays ``[lo, hi)`` from that watermark with its output
suppressed (it was committed already), which rebuilds the open windows exactly, then goes on.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from tickforge.platform.bars.watermark import NO_WATERMARK, wall_ms
from tickforge.platform.contracts import JSON_ENCODER, DeadLetter
from tickforge.platform.io.kafka import (
    StopWaiting,
    encode_marker,
    make_consumer,
    make_producer,
    marker_headers,
    retry_retriable,
    topic_name,
)
from tickforge.platform.settings import Settings
from tickforge.platform.reasons import Reason
from tickforge.platform.topics import DEAD_LETTER
from tickforge.streaming import metrics
from tickforge.streaming.codec import payload_text

log = logging.getLogger(__name__)


# Every blocking client call is bounded; a broker that is away is waited for (with backoff) for
# at most the outage budget, after which the worker exits for its supervisor.
CALL_TIMEOUT_S = 10.0
OUTAGE_BUDGET_S = 120.0
T = TypeVar("T")


class _Stopped(Exception):
    """SIGTERM arrived while waiting for the broker."""


class Checkpoint(msgspec.Struct, frozen=True):
    lo_wm: int  # watermark before the message at the committed offset
    hi: int  # consumer position when committed: [lo, hi) is replayed silently
    # Watermark at hi. Replaying [lo, hi) from lo_wm rebuilds it from the input, except where it
    # moved without input (an idle advance): the replay ends by moving there, silently.
    hi_wm: int | None = None


_CHECKPOINT_DECODER = msgspec.json.Decoder(Checkpoint)


@dataclass
class Output:
    """What a task emits during one transaction; dropped while replaying."""

    producer: Producer
    partition: int
    replaying: bool = False
    produced: int = 0
    dead_letter_topic: str = ""
    _refusal: str = ""
    # (worker, timeframe, wall ms when the watermark passed, bars): observed once committed
    latencies: list[tuple[str, str, int, int]] = field(default_factory=list)

    def send(self, topic: str, key: bytes | str | None, value: bytes, headers=None) -> None:
        if self.replaying:
            return
        if self._produce(topic, key, value, headers):
            return
        # The broker's client refused it before it left (over the message size, say): what the
        # input produced is kept in the dead letter, and the partition goes on.
        self.dead_letter(DeadLetter(
            reason=Reason.UNPRODUCIBLE, source=topic, payload=payload_text(value),
            symbol=key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
            partition=self.partition, detail=self._refusal,
        ))

    def marker(self, topic: str, watermark_ms: int) -> None:
        self.send(topic, None, encode_marker(watermark_ms), marker_headers())

    def dead_letter(self, letter: DeadLetter) -> None:
        if self.replaying:
            return
        metrics.DEAD_LETTERS.labels(reason=letter.reason).inc()
        letter = letter.bounded()
        if not self._produce(self.dead_letter_topic, letter.source, JSON_ENCODER.encode(letter), None):
            log.error("dead letter refused", extra={"reason": letter.reason, "error": self._refusal})

    def _produce(self, topic: str, key: bytes | str | None, value: bytes, headers) -> bool:
        """Produce, waiting while the client's queue is full; False if the client refuses it."""
        while True:
            try:
                self.producer.produce(topic, value, key, partition=self.partition, headers=headers)
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
    watermark: int

    def process(self, msg: Message, out: Output) -> int:
        """Apply one input message; return the watermark at which it stops being needed."""
        ...

    def close(self, out: Output) -> None:
        """Emit what the current watermark has closed (and forward the watermark)."""
        ...

    def idle(self, out: Output) -> None:
        """Called when the partition had no input for a while (idle advance)."""
        ...

    # A task whose watermark can move without input (idle advance) also implements
    # ``restore(watermark, out)``: move there after a replay, closing windows without output.


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
    restore_wm: int | None = None  # the checkpoint's hi_wm, until the replay has reached it

    def idle_due(self, now_ms: int, idle_timeout_ms: int) -> bool:
        return (
            self.at_end
            and self.position >= self.replay_until
            and now_ms - self.last_input_ms >= idle_timeout_ms
        )

    def checkpoint(self) -> tuple[int, Checkpoint]:
        wm = self.task.watermark
        while self.pending and self.pending[0][2] <= wm:
            self.pending.popleft()
        # Still replaying what an earlier instance emitted: the next one must suppress up to the
        # same point, and end at the watermark that instance reached there.
        hi = max(self.position, self.replay_until)
        hi_wm = wm if self.restore_wm is None else max(wm, self.restore_wm)
        if self.pending:
            offset, wm_before, _ = self.pending[0]
            return offset, Checkpoint(wm_before, hi, hi_wm)
        return self.position, Checkpoint(wm, hi, hi_wm)


class TransactionalWorker:
    """Consumer-group member running a task per assigned partition inside transactions."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        input_topic: str,
        task_factory: Callable[[int, int], PartitionTask],
        instance_id: str = "0",
        batch_size: int = 2_000,
        idle_check_ms: int = 200,
        transaction_budget_ms: int = 15,
        latency_budget_ms: int = 3,
    ) -> None:
        self.settings = settings
        self.name = name
        self.input_topic = topic_name(settings, input_topic)
        self.task_factory = task_factory
        self.batch_size = batch_size
        # Work per transaction is bounded in time, not messages: a column batch holds thousands
        # of ticks, and a bar's emit latency includes the rest of its transaction.
        self.transaction_budget_ms = transaction_budget_ms
        self.latency_budget_ms = latency_budget_ms
        self._backlog: deque[Message] = deque()
        # The last consume() returned less than a full batch: the client's queue was drained, so
        # nothing that has arrived is waiting outside the backlog.
        self._drained = False
        self._drained_at = 0.0
        self.idle_check_ms = idle_check_ms
        self.group_id = f"{settings.kafka.topic_prefix}{name}"
        # Static membership: a restarted instance (same id) takes its partitions back at once
        # instead of waiting for the dead member's session to time out.
        self.consumer: Consumer = make_consumer(
            settings,
            self.group_id,
            **{
                "partition.assignment.strategy": "range",
                "group.instance.id": f"{self.group_id}-{instance_id}",
                "session.timeout.ms": 10_000,
                # End-of-partition events tell a caught-up partition (may idle) from a lagging one.
                "enable.partition.eof": True,
            },
        )
        self.transactional_id = f"{self.group_id}-{instance_id}"
        self.producer: Producer = self._new_producer()
        self.dead_letter_topic = topic_name(settings, DEAD_LETTER)
        self.tracks: dict[int, _Track] = {}
        self._stop = False
        self._liveness = None
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="kafka-call")
        self._last_idle_check = wall_ms()

    def _new_producer(self) -> Producer:
        return make_producer(
            self.settings,
            transactional_id=self.transactional_id,
            # The commit flushes anyway: lingering would only add to every bar's latency. A
            # transaction begun right after a commit meets CONCURRENT_TRANSACTIONS until the
            # coordinator has written the markers; the client retries after retry.backoff.ms,
            # 100 ms by default, which was the whole p99 of a bar's emit latency.
            **{"transaction.timeout.ms": 10_000, "linger.ms": 1, "retry.backoff.ms": 5},
        )

    # -- assignment -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = self._retrying("read committed offsets", lambda: consumer.committed(partitions, timeout=CALL_TIMEOUT_S))
        self._install(committed)

    def _install(self, committed: list[TopicPartition]) -> None:
        """A fresh task per partition, from the checkpoint committed with its offset."""
        for tp in committed:
            lo_wm, hi, hi_wm = NO_WATERMARK, -1, None
            if tp.metadata:
                point = _CHECKPOINT_DECODER.decode(tp.metadata)
                lo_wm, hi, hi_wm = point.lo_wm, point.hi, point.hi_wm
            track = _Track(self.task_factory(tp.partition, lo_wm), replay_until=hi)
            track.restore_wm = hi_wm if hi_wm is not None and hi_wm > lo_wm else None
            track.position = tp.offset if tp.offset >= 0 else -1
            self.tracks[tp.partition] = track
            log.info(
                "assigned",
                extra={
                    "worker": self.name, "partition": tp.partition, "offset": tp.offset,
                    "replay_until": hi, "watermark": lo_wm,
                },
            )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        for partition in revoked:
            self.tracks.pop(partition, None)
        # Consumed but unprocessed messages of those partitions: the next owner reads them again.
        self._backlog = deque(m for m in self._backlog if m.partition() not in revoked)

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
        self.consumer.subscribe([self.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_input = time.monotonic()
        try:
            while not self._stop:
                self._liveness.set(time.time())
                if not self._backlog:
                    msgs = self.consumer.consume(self.batch_size, timeout=0.05)
                    self._drained = len(msgs) < self.batch_size
                    self._drained_at = time.monotonic()
                    if msgs:
                        last_input = time.monotonic()
                    self._backlog.extend(msgs)
                self.step()
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
        coordinator that lost the transaction during an outage), start a new producer under the
        same transactional id. Fenced means another process holds that id: exit for it."""
        error = exc.args[0]
        if error.code() == KafkaError._FENCED or error.code() == KafkaError.PRODUCER_FENCED:
            log.error("fenced", extra={"worker": self.name, "error": str(exc)})
            raise exc
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
        partitions = [TopicPartition(self.input_topic, p) for p in sorted(self.tracks)]
        self._backlog.clear()
        self.tracks.clear()
        if not partitions:
            return
        committed = self._retrying(
            "read committed offsets", lambda: self.consumer.committed(partitions, timeout=CALL_TIMEOUT_S)
        )
        self._install(committed)
        for tp in committed:
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._retrying("seek", lambda tp=tp, start=start: self.consumer.seek(
                TopicPartition(self.input_topic, tp.partition, start)))

    def step(self) -> None:
        """One transaction: backlog messages until the time budget is spent, plus idle work."""
        now = wall_ms()
        check_idle = now - self._last_idle_check >= self.idle_check_ms
        if not self._backlog and not check_idle:
            return
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            self._recover(exc)
            return
        began = time.monotonic()
        deadline = began + self.transaction_budget_ms / 1000
        outputs: dict[int, Output] = {}
        taken = 0
        latency_due = False
        while self._backlog and ((taken < 4 and not latency_due) or time.monotonic() < deadline):
            msg = self._backlog.popleft()
            taken += 1
            track = self.tracks.get(msg.partition())
            err = msg.error()
            if track is None or err is not None:
                if err is None:
                    continue
                if err.code() == KafkaError._PARTITION_EOF:
                    if track is not None:
                        track.at_end = True
                else:
                    log.warning("consume error", extra={"worker": self.name, "error": str(err)})
                continue
            track.at_end = False
            out = outputs.get(msg.partition())
            if out is None:
                out = outputs[msg.partition()] = self._output(msg.partition())
            self._process_one(track, msg, out)
            if out.latencies and not latency_due:
                # Bars are waiting in this transaction: commit soon rather than fill the budget.
                latency_due = True
                deadline = min(deadline, time.monotonic() + self.latency_budget_ms / 1000)
        now = wall_ms()
        for partition, out in outputs.items():
            track = self.tracks[partition]
            track.task.close(out)  # suppressed when the last message was a replayed one
            out.replaying = False
            track.dirty = True
            track.last_input_ms = now
        # Idle means caught up with nothing left to read: never while input waits to be processed.
        # The drain must be recent: a backlog that took seconds let new input queue up meanwhile.
        drained = self._drained and time.monotonic() - self._drained_at < self.idle_check_ms / 1000
        if check_idle and not self._backlog and drained:
            self._last_idle_check = now
            for partition, track in self.tracks.items():
                if partition in outputs or not track.idle_due(now, self.settings.streaming.idle_timeout_ms):
                    continue
                out = outputs[partition] = self._output(partition)
                wm = track.task.watermark
                track.task.idle(out)
                track.dirty |= track.task.watermark != wm
        offsets = []
        for partition, track in self.tracks.items():
            if not track.dirty or track.position < 0:
                continue
            offset, point = track.checkpoint()
            offsets.append(
                TopicPartition(self.input_topic, partition, offset, metadata=msgspec.json.encode(point).decode())
            )
            track.dirty = False
        if not offsets and not any(o.produced for o in outputs.values()):
            self._retrying("abort", lambda: self.producer.abort_transaction(CALL_TIMEOUT_S))
            return
        committing = time.monotonic()
        if not self._commit(offsets):
            return
        committed_at = wall_ms()
        done = time.monotonic()
        metrics.TRANSACTION_MS.observe((self.name, "process"), (committing - began) * 1000)
        metrics.TRANSACTION_MS.observe((self.name, "commit"), (done - committing) * 1000)
        for out in outputs.values():
            metrics.MESSAGES_OUT.labels(worker=self.name).inc(out.produced)
            for worker, timeframe, passed_at, bars in out.latencies:
                metrics.EMIT_LATENCY.observe((worker, timeframe), committed_at - passed_at, bars)

    def _output(self, partition: int) -> Output:
        return Output(self.producer, partition, dead_letter_topic=self.dead_letter_topic)

    def _process_one(self, track: _Track, msg: Message, out: Output) -> None:
        """Apply one message; when it moved the watermark, emit what closed at once, so a bar's
        latency is the rest of its transaction (bounded by the time budget)."""
        task = track.task
        offset = msg.offset()
        if track.restore_wm is not None and offset >= track.replay_until:
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
            out.dead_letter(DeadLetter(
                reason=Reason.PROCESSING_ERROR, source=self.input_topic, payload=payload_text(msg.value()),
                partition=msg.partition(), offset=offset, detail=f"{type(exc).__name__}: {exc}",
            ))
            needed_until = NO_WATERMARK
        if task.watermark > wm_before:
            task.close(out)
        if needed_until > task.watermark:
            track.pending.append((offset, wm_before, needed_until))
        track.position = offset + 1
        if track.restore_wm is not None and track.position >= track.replay_until:
            self._restore(track, out)

    @staticmethod
    def _restore(track: _Track, out: Output) -> None:
        """End of the replay: the watermark the partition had reached, without output."""
        watermark, track.restore_wm = track.restore_wm, None
        restore = getattr(track.task, "restore", None)
        if restore is None or watermark is None or watermark <= track.task.watermark:
            return
        replaying, out.replaying = out.replaying, True
        restore(watermark, out)
        out.replaying = replaying
