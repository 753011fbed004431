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
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from tickforge.platform.bars.watermark import NO_WATERMARK, wall_ms
from tickforge.platform.contracts import JSON_ENCODER, DeadLetter
from tickforge.platform.io.kafka import encode_marker, make_consumer, make_producer, marker_headers, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER
from tickforge.streaming import metrics

log = logging.getLogger(__name__)


class Checkpoint(msgspec.Struct, frozen=True):
    lo_wm: int  # watermark before the message at the committed offset
    hi: int  # consumer position when committed: [lo, hi) is replayed silently


_CHECKPOINT_DECODER = msgspec.json.Decoder(Checkpoint)


@dataclass
class Output:
    """What a task emits during one transaction; dropped while replaying."""

    producer: Producer
    partition: int
    replaying: bool = False
    produced: int = 0
    dead_letter_topic: str = ""

    def send(self, topic: str, key: bytes | str | None, value: bytes, headers=None) -> None:
        if self.replaying:
            return
        self.producer.produce(topic, value, key, partition=self.partition, headers=headers)
        self.produced += 1
        if self.produced % 10_000 == 0:
            self.producer.poll(0)

    def marker(self, topic: str, watermark_ms: int) -> None:
        self.send(topic, None, encode_marker(watermark_ms), marker_headers())

    def dead_letter(self, letter: DeadLetter) -> None:
        if self.replaying:
            return
        metrics.DEAD_LETTERS.labels(reason=letter.reason).inc()
        self.producer.produce(self.dead_letter_topic, JSON_ENCODER.encode(letter), letter.source)
        self.produced += 1


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


@dataclass
class _Track:
    task: PartitionTask
    replay_until: int  # offsets below this were processed and committed before
    position: int = -1
    pending: deque[tuple[int, int, int]] = field(default_factory=deque)  # offset, wm before, needed until
    last_input_ms: int = field(default_factory=wall_ms)
    dirty: bool = False

    def checkpoint(self) -> tuple[int, Checkpoint]:
        wm = self.task.watermark
        while self.pending and self.pending[0][2] <= wm:
            self.pending.popleft()
        if self.pending:
            offset, wm_before, _ = self.pending[0]
            return offset, Checkpoint(wm_before, self.position)
        return self.position, Checkpoint(wm, self.position)


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
    ) -> None:
        self.settings = settings
        self.name = name
        self.input_topic = topic_name(settings, input_topic)
        self.task_factory = task_factory
        self.batch_size = batch_size
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
            },
        )
        self.producer: Producer = make_producer(
            settings,
            transactional_id=f"{self.group_id}-{instance_id}",
            **{"transaction.timeout.ms": 10_000},
        )
        self.dead_letter_topic = topic_name(settings, DEAD_LETTER)
        self.tracks: dict[int, _Track] = {}
        self._stop = False
        self._last_idle_check = wall_ms()

    # -- assignment -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        for tp in committed:
            lo_wm, hi = NO_WATERMARK, -1
            if tp.metadata:
                point = _CHECKPOINT_DECODER.decode(tp.metadata)
                lo_wm, hi = point.lo_wm, point.hi
            track = _Track(self.task_factory(tp.partition, lo_wm), replay_until=hi)
            track.position = tp.offset if tp.offset >= 0 else -1
            self.tracks[tp.partition] = track
            log.info(
                "assigned",
                extra={"worker": self.name, "partition": tp.partition, "offset": tp.offset, "replay_until": hi},
            )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.tracks.pop(tp.partition, None)

    # -- loop -------------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self._stop = True

    def run(self, max_idle_s: float | None = None) -> None:
        """Run until SIGTERM/SIGINT (or ``max_idle_s`` without input, for batch use)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.producer.init_transactions(30)
        self.consumer.subscribe([self.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_input = time.monotonic()
        try:
            while not self._stop:
                msgs = self.consumer.consume(self.batch_size, timeout=0.05)
                if msgs:
                    last_input = time.monotonic()
                self.step(msgs)
                if max_idle_s is not None and time.monotonic() - last_input > max_idle_s:
                    break
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def step(self, msgs: list[Message]) -> None:
        by_partition: dict[int, list[Message]] = {}
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"worker": self.name, "error": str(err)})
                continue
            by_partition.setdefault(msg.partition(), []).append(msg)
        now = wall_ms()
        check_idle = now - self._last_idle_check >= self.idle_check_ms
        if not by_partition and not check_idle:
            return
        self.producer.begin_transaction()
        outputs: list[Output] = []
        for partition, track in self.tracks.items():
            out = Output(self.producer, partition, dead_letter_topic=self.dead_letter_topic)
            batch = by_partition.get(partition)
            if batch:
                self._process(track, batch, out)
                track.last_input_ms = now
            elif check_idle and now - track.last_input_ms >= self.settings.streaming.idle_timeout_ms:
                wm = track.task.watermark
                track.task.idle(out)
                track.dirty |= track.task.watermark != wm
            outputs.append(out)
        if check_idle:
            self._last_idle_check = now
        offsets = []
        for partition, track in self.tracks.items():
            if not track.dirty or track.position < 0:
                continue
            offset, point = track.checkpoint()
            offsets.append(
                TopicPartition(self.input_topic, partition, offset, metadata=msgspec.json.encode(point).decode())
            )
            track.dirty = False
        if not offsets and not any(o.produced for o in outputs):
            self.producer.abort_transaction()
            return
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata())
            self.producer.commit_transaction()
        except KafkaException as exc:
            # Not a data problem: a fenced or broken producer. Exit and let the supervisor restart
            # us; the committed checkpoint makes the restart exact.
            log.error("transaction failed", extra={"worker": self.name, "error": str(exc)})
            raise
        for out in outputs:
            metrics.MESSAGES_OUT.labels(worker=self.name).inc(out.produced)

    def _process(self, track: _Track, batch: list[Message], out: Output) -> None:
        task = track.task
        for msg in batch:
            offset = msg.offset()
            replaying = offset < track.replay_until
            if out.replaying and not replaying:
                # Leaving the replay region: what the watermark closed by now was committed before.
                task.close(out)
            out.replaying = replaying
            wm_before = task.watermark
            needed_until = task.process(msg, out)
            if needed_until > task.watermark:
                track.pending.append((offset, wm_before, needed_until))
            track.position = offset + 1
        task.close(out)
        out.replaying = False
        track.dirty = True
