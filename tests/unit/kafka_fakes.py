"""In-memory Kafka clients for unit tests of the exactly-once runtime.

One :class:`FakeBroker` holds the committed log of every topic partition and each group's
committed offsets (with their metadata). Its producers are transactional like Kafka's: records and
input offsets become visible together at ``commit_transaction`` and vanish on abort (or when the
producer is dropped mid-transaction, as a killed process would be). Its consumers read committed
records only (``read_committed``), announce the end of a partition once per position, and are
assigned partitions cooperatively: :meth:`FakeBroker.rebalance` first revokes what moves (each
loser's ``on_revoke`` runs in its next ``consume``) and only then assigns it to its new owner, the
way the cooperative-sticky protocol hands partitions over in two rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_INVALID, TIMESTAMP_CREATE_TIME, KafkaError, TopicPartition


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None
    _timestamp_ms: int
    _error: KafkaError | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._timestamp_ms

    def error(self) -> KafkaError | None:
        return self._error


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


@dataclass
class _Topic:
    partitions: dict[int, Any]


@dataclass
class _Metadata:
    topics: dict[str, _Topic]


class FakeBroker:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.logs: dict[tuple[str, int], list[FakeMessage]] = {}
        self.offsets: dict[tuple[str, str, int], tuple[int, str | None]] = {}  # (group, topic, p)
        self.members: list[FakeConsumer] = []

    # -- factories with the runtime's signatures -----------------------------------------------
    def consumer(self, settings: Any, group_id: str, **config: Any) -> FakeConsumer:
        consumer = FakeConsumer(self, group_id, config)
        self.members.append(consumer)
        return consumer

    def producer(self, settings: Any = None, transactional_id: str | None = None, **config: Any) -> FakeProducer:
        return FakeProducer(self, transactional_id)

    # -- the log -----------------------------------------------------------------------------
    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Any) -> None:
        log = self.logs.setdefault((topic, partition), [])
        log.append(FakeMessage(topic, partition, len(log), key, value, headers, int(time.time() * 1000)))

    def records(self, topic: str) -> list[FakeMessage]:
        return [m for (t, _), log in sorted(self.logs.items()) if t == topic for m in log]

    # -- the group -----------------------------------------------------------------------------
    def rebalance(self, assignment: dict[FakeConsumer, set[int]]) -> None:
        """Move partitions: revoked from their owners first, assigned once every revoke is served."""
        for member, wanted in assignment.items():
            member.pending_revoke |= member.owned - wanted
            member.pending_assign |= wanted - member.owned

    def revokes_outstanding(self) -> bool:
        return any(m.pending_revoke for m in self.members)


class FakeConsumer:
    def __init__(self, broker: FakeBroker, group_id: str, config: dict[str, Any]) -> None:
        self.broker, self.group_id, self.config = broker, group_id, config
        self.topic = ""
        self.owned: set[int] = set()
        self.pending_revoke: set[int] = set()
        self.pending_assign: set[int] = set()
        self.positions: dict[int, int] = {}
        self.eof_sent: dict[int, int] = {}
        self.callbacks: dict[str, Any] = {}
        self.fetch_chunk = 1_000_000  # messages of one partition per turn: a skewed client queue
        self.consume_calls = 0
        self.closed = False
        self.paused: set[int] = set()
        self.injected: list[FakeMessage] = []  # handed out by the next consume (an error event, say)

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self.topic = topics[0]
        self.callbacks = {"assign": on_assign, "revoke": on_revoke}

    def _serve_rebalance(self) -> None:
        if self.pending_revoke:
            revoked, self.pending_revoke = sorted(self.pending_revoke), set()
            self.callbacks["revoke"](self, [TopicPartition(self.topic, p) for p in revoked])
            self.owned -= set(revoked)
            for p in revoked:
                self.positions.pop(p, None)
                self.paused.discard(p)
        if self.pending_assign and not self.broker.revokes_outstanding():
            assigned, self.pending_assign = sorted(self.pending_assign), set()
            self.callbacks["assign"](self, [TopicPartition(self.topic, p, OFFSET_INVALID) for p in assigned])
            self.owned |= set(assigned)
            for p in assigned:  # the client starts at the committed offset
                offset, _ = self.broker.offsets.get((self.group_id, self.topic, p), (0, None))
                self.positions[p] = offset

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.consume_calls += 1
        self._serve_rebalance()
        out, self.injected = self.injected, []
        progress = True
        while len(out) < num_messages and progress:
            progress = False
            for p in sorted(self.positions):
                if p in self.paused:
                    continue
                log = self.broker.logs.get((self.topic, p), [])
                start = self.positions[p]
                take = log[start : start + min(self.fetch_chunk, num_messages - len(out))]
                out.extend(take)
                self.positions[p] = start + len(take)
                progress |= bool(take)
                if self.positions[p] == len(log) and self.eof_sent.get(p) != len(log) and len(out) < num_messages:
                    self.eof_sent[p] = len(log)
                    out.append(
                        FakeMessage(self.topic, p, len(log), None, None, None, 0, KafkaError(KafkaError._PARTITION_EOF))
                    )
                if len(out) >= num_messages:
                    break
        return out

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        result = []
        for tp in partitions:
            offset, metadata = self.broker.offsets.get((self.group_id, tp.topic, tp.partition), (OFFSET_INVALID, None))
            if metadata is None:
                result.append(TopicPartition(tp.topic, tp.partition, offset))
            else:
                result.append(TopicPartition(tp.topic, tp.partition, offset, metadata=metadata))
        return result

    def seek(self, partition: TopicPartition) -> None:
        self.positions[partition.partition] = max(partition.offset, 0)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def consumer_group_metadata(self) -> str:
        return self.group_id

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.broker.logs.get((partition.topic, partition.partition), []))

    def close(self) -> None:
        self.closed = True
        if self in self.broker.members:
            self.broker.members.remove(self)


@dataclass
class FakeProducer:
    broker: FakeBroker
    transactional_id: str | None
    pending: list[tuple[str, int, bytes | None, bytes | None, Any]] = field(default_factory=list)
    pending_offsets: list[tuple[str, list[TopicPartition]]] = field(default_factory=list)
    in_transaction: bool = False
    commits: int = 0
    undeliverable: bool = False  # every plain (non-transactional) message fails its delivery

    def list_topics(self, topic: str, timeout: float) -> _Metadata:
        return _Metadata({topic: _Topic({p: None for p in range(self.broker.partitions)})})

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        assert not self.in_transaction, "a transaction is open already"
        self.in_transaction = True

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        partition: int = -1,
        headers: Any = None,
        on_delivery: Callable[[KafkaError | None, Any], None] | None = None,
    ) -> None:
        assert partition >= 0, "the runtime always names the partition"
        record = (topic, partition, _bytes(key), value, headers)
        if self.transactional_id is None:
            if self.undeliverable:  # the broker never took it (a delivery timeout)
                if on_delivery is not None:
                    on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)
                return
            self.broker.append(*record)
            if on_delivery is not None:
                on_delivery(None, None)
        else:
            assert self.in_transaction, "produce outside a transaction"
            self.pending.append(record)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: str, timeout: float) -> None:
        self.pending_offsets.append((group_metadata, positions))

    def commit_transaction(self, timeout: float) -> None:
        for record in self.pending:
            self.broker.append(*record)
        for group, positions in self.pending_offsets:
            for tp in positions:
                self.broker.offsets[(group, tp.topic, tp.partition)] = (tp.offset, tp.metadata)
        self._end()
        self.commits += 1

    def abort_transaction(self, timeout: float) -> None:
        self._end()

    def _end(self) -> None:
        self.pending.clear()
        self.pending_offsets.clear()
        self.in_transaction = False
