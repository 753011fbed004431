"""The ``trading.control`` topic: publishing a command, and reading the state in force.

:class:`ControlReader` is a side consumer, outside any transaction and consumer group: it is
assigned every partition of the topic from the beginning and keeps the latest command per scope
(:class:`~tickforge.trading.control.ControlState`). A risk instance reads it to the end before
checking its first order (:meth:`ControlReader.catch_up`), so it never trades on a state it does
not know; afterwards it polls it between messages. A message that is not a valid command is
refused (logged with its reason and offset, counted as a dead letter) and changes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import partial

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from tickforge.platform.io.kafka import client_config, make_consumer, retry_retriable, topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.platform.topics import TRADING_CONTROL
from tickforge.streaming import metrics
from tickforge.trading.control import ControlCommand, ControlError, ControlState, decode_control, encode_control

log = logging.getLogger(__name__)

# Every command goes to one partition whatever its scope: one total order, so "the latest of the
# account's scope and of 'all'" means the same to every reader (compaction is per key within it).
CONTROL_PARTITION = 0


def publish_control(settings: Settings, command: ControlCommand, timeout_s: float = 15.0) -> tuple[int, int]:
    """Write ``command`` to the control topic and wait for the broker: (partition, offset)."""
    topic = topic_name(settings, TRADING_CONTROL)
    producer = Producer(client_config(settings, **{"enable.idempotence": True, "acks": "all"}))
    partitions = len(producer.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
    if partitions == 0:
        raise RuntimeError(f"topic {topic} does not exist (tickforge topics apply)")
    delivered: list = []
    producer.produce(
        topic,
        encode_control(command),
        command.scope,
        partition=CONTROL_PARTITION,
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )
    if producer.flush(timeout_s) or not delivered:
        raise RuntimeError(f"control command not delivered to {topic} within {timeout_s:g} s")
    err, msg = delivered[0]
    if err is not None:
        raise RuntimeError(f"control command refused by {topic}: {err}")
    return msg.partition(), msg.offset()


class ControlReader:
    def __init__(self, settings: Settings, account: str) -> None:
        self.account = account
        self.topic = topic_name(settings, TRADING_CONTROL)
        self.state = ControlState()
        self.refused = 0
        # A group id is required by the client; nothing is ever committed under it.
        self._consumer: Consumer = make_consumer(
            settings, f"{settings.kafka.topic_prefix}control-reader-{uuid.uuid4().hex[:8]}"
        )
        meta = self._consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        if meta.error is not None or not meta.partitions:
            raise RuntimeError(f"topic {self.topic} does not exist (tickforge topics apply)")
        self._partitions = sorted(meta.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self._partitions])

    def in_force(self) -> ControlCommand | None:
        return self.state.in_force(self.account)

    def poll(self, timeout_s: float = 0.0, max_messages: int = 500) -> list[ControlCommand]:
        """The valid commands that arrived since the last poll, in topic order."""
        out = []
        for msg in self._consumer.consume(max_messages, timeout=timeout_s):
            if msg.error() is not None:
                continue
            try:
                command = decode_control(msg.value())
            except ControlError as exc:
                self.refused += 1
                metrics.DEAD_LETTERS.labels(reason=Reason.SCHEMA_VIOLATION).inc()
                log.error(
                    "control message refused",
                    extra={"offset": msg.offset(), "partition": msg.partition(), "error": str(exc)},
                )
                continue
            self.state.apply(command)
            out.append(command)
        return out

    def catch_up(self, timeout_s: float = 15.0) -> list[ControlCommand]:
        """Read to the end the topic had when called; raises when that takes over ``timeout_s``."""
        ends: dict[int, tuple[int, int]] = {}
        for p in self._partitions:
            try:
                # a topic created a moment ago may not have its leader yet: retriable
                ends[p] = retry_retriable(
                    "control end offsets",
                    partial(self._consumer.get_watermark_offsets, TopicPartition(self.topic, p), timeout=timeout_s),
                    timeout_s,
                )
            except KafkaException as exc:
                raise RuntimeError(f"{self.topic}: cannot read the end offsets: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        out: list[ControlCommand] = []
        while any(self._position(p, low) < high for p, (low, high) in ends.items()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.topic}: not read to its end within {timeout_s:g} s")
            out += self.poll(0.2)
        return out

    def _position(self, partition: int, low: int) -> int:
        """The next offset this reader will see (``low`` before it has read anything)."""
        [tp] = self._consumer.position([TopicPartition(self.topic, partition)])
        return tp.offset if tp.offset >= 0 else low

    def close(self) -> None:
        self._consumer.close()
