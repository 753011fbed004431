"""Kafka clients configured from settings, topic administration and watermark markers.

Watermark markers are ordinary messages with the header ``kind: watermark`` and a JSON body
``{"watermark_ms": N}``. A worker forwards its partition's watermark on every output topic so a
downstream stage closes windows at the same event time (and the last windows of a quiet stream
close without new data).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from tickforge.platform.retry import Backoff
from tickforge.platform.settings import Settings
from tickforge.platform.topics import TopicSpec, registry

log = logging.getLogger(__name__)
T = TypeVar("T")

KIND_HEADER = "kind"
KIND_WATERMARK = b"watermark"


class WatermarkMarker(msgspec.Struct, frozen=True):
    watermark_ms: int


_MARKER_ENCODER = msgspec.json.Encoder()
_MARKER_DECODER = msgspec.json.Decoder(WatermarkMarker)


def encode_marker(watermark_ms: int) -> bytes:
    return _MARKER_ENCODER.encode(WatermarkMarker(watermark_ms))


def marker_watermark(msg: Message) -> int | None:
    """The watermark a marker message carries, or None for a data message.

    A marker header on a body that is no marker makes the message data: the consumer's decoder
    then dead-letters it as undecodable, and no watermark moves on it.
    """
    headers = msg.headers()
    if not headers:
        return None
    for key, value in cast(list[tuple[str, bytes]], headers):  # a consumed message's: a list
        if key == KIND_HEADER and value == KIND_WATERMARK:
            try:
                return _MARKER_DECODER.decode(msg.value() or b"").watermark_ms
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None
    return None


# Message headers as the producer takes them.
Headers = list[tuple[str, str | bytes | None]]


def marker_headers() -> Headers:
    return [(KIND_HEADER, KIND_WATERMARK)]


def topic_name(settings: Settings, name: str) -> str:
    return f"{settings.kafka.topic_prefix}{name}"


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap_servers}
    config.update(settings.kafka.client_config)
    config.update(overrides)
    return config


def make_producer(settings: Settings, transactional_id: str | None = None, **overrides: Any) -> Producer:
    config = client_config(
        settings,
        **{
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
            **overrides,
        },
    )
    if transactional_id:
        config["transactional.id"] = transactional_id
    return Producer(config)


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    config = client_config(
        settings,
        **{
            "group.id": group_id,
            # Offsets are committed with the output (transactions) or after it is durable.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
            **overrides,
        },
    )
    return Consumer(config)


# Kafka's default lower bound on a group member's session timeout, assumed where the broker's
# own setting cannot be read.
DEFAULT_MIN_SESSION_TIMEOUT_MS = 6_000


def make_group_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer-group member; its ``session.timeout.ms`` raised to the broker's
    ``group.min.session.timeout.ms`` where that is higher (a broker with Kafka's defaults refuses
    a shorter session and the member could never join)."""
    wanted = overrides.get("session.timeout.ms")
    if wanted is not None:
        floor = min_session_timeout_ms(settings)
        if int(wanted) < floor:
            log.info("session timeout raised to the broker's minimum", extra={"wanted": wanted, "minimum": floor})
            overrides["session.timeout.ms"] = floor
            heartbeat = overrides.get("heartbeat.interval.ms")
            if heartbeat is not None:
                overrides["heartbeat.interval.ms"] = min(int(heartbeat), floor // 3)
    return make_consumer(settings, group_id, **overrides)


def min_session_timeout_ms(settings: Settings, timeout: float = 5.0) -> int:
    """The broker's ``group.min.session.timeout.ms`` (Kafka's default where unreadable)."""
    try:
        admin = AdminClient(client_config(settings))
        brokers = admin.list_topics(timeout=timeout).brokers
        if not brokers:
            return DEFAULT_MIN_SESSION_TIMEOUT_MS
        resource = ConfigResource("broker", str(min(brokers)))
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
        return int(entries["group.min.session.timeout.ms"].value)
    except (KafkaException, KeyError, ValueError, TypeError, TimeoutError) as exc:
        log.info("broker session bounds unknown", extra={"error": str(exc)})
        return DEFAULT_MIN_SESSION_TIMEOUT_MS


def group_assignment(settings: Settings, group_id: str, timeout: float = 10.0) -> dict[str, set[int]]:
    """Which member of a consumer group holds which partitions: member (its ``group.instance.id``
    where it has one, else its member id) -> partition numbers. Empty while the group's
    coordinator is not ready (a broker just started)."""
    admin = AdminClient(client_config(settings))
    try:
        group = admin.describe_consumer_groups([group_id], request_timeout=timeout)[group_id].result()
    except KafkaException:
        return {}
    return {
        member.group_instance_id or member.member_id: {tp.partition for tp in member.assignment.topic_partitions}
        for member in group.members
    }


def first_output_after(settings: Settings, topic: str, since: Mapping[int, int], timeout: float) -> float:
    """``time.monotonic()`` when the first committed message past ``since[p]`` shows up on one of
    its partitions (records and markers of aborted transactions are never handed out), for
    measuring how long a partition's output stalled."""
    reader = make_consumer(settings, f"{settings.kafka.topic_prefix}probe-{time.time_ns()}")
    name = topic_name(settings, topic)
    reader.assign([TopicPartition(name, p, offset) for p, offset in since.items()])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = reader.poll(0.02)
            if msg is not None and msg.error() is None:
                return time.monotonic()
        raise TimeoutError(f"no output on {name} {sorted(since)} within {timeout:.0f}s")
    finally:
        reader.close()


def topic_offsets(consumer: Consumer, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``: (low, high) offsets. For a ``read_committed`` consumer the high
    offset is the last stable one: messages of a transaction still open are not counted."""
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in sorted(partitions)}


def consume_range(
    consumer: Consumer,
    topic: str,
    start: Mapping[int, int],
    ends: Mapping[int, int],
    on_batch: Callable[[list[Message]], None],
    deadline_s: float,
) -> dict[int, int]:
    """Hand ``on_batch`` every message of ``topic`` with ``start[p] <= offset < ends[p]`` (for the
    partitions in ``ends``), a consume batch at a time, until done or ``deadline_s`` has passed.

    Returns per partition the offset read up to: ``ends[p]`` when done, less where time ran out.
    Progress is the consumer's position, not a message count: with ``read_committed`` the
    transaction markers take offsets too and are never handed out.
    """
    todo = {p: start.get(p, 0) for p in ends}
    reached = dict(ends)
    pending = {p for p in ends if todo[p] < ends[p]}
    if not pending:
        return reached
    consumer.assign([TopicPartition(topic, p, todo[p]) for p in pending])
    stop_at = time.monotonic() + deadline_s
    while pending and time.monotonic() < stop_at:
        batch = [
            msg
            for msg in consumer.consume(2_000, timeout=0.5)
            if msg.error() is None and cast(int, msg.offset()) < ends[cast(int, msg.partition())]
        ]
        if batch:
            on_batch(batch)
        positions = consumer.position([TopicPartition(topic, p) for p in pending])
        pending = {tp.partition for tp in positions if tp.offset < ends[tp.partition]}
    if pending:
        # Out of time: a position not known yet (no fetch) counts as the start.
        for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
            reached[tp.partition] = max(tp.offset, todo[tp.partition])
    return reached


def apply_topics(settings: Settings, specs: Iterable[TopicSpec] | None = None, timeout: float = 30.0) -> dict[str, str]:
    """Create missing topics, grow partition counts, and set configs. Returns name -> action."""
    specs = list(specs if specs is not None else registry(settings.streaming.timeframes))
    admin = AdminClient(client_config(settings))
    existing = admin.list_topics(timeout=timeout).topics
    actions: dict[str, str] = {}
    to_create, to_grow, to_alter = [], [], []
    for spec in specs:
        name = topic_name(settings, spec.name)
        partitions = spec.partitions or settings.kafka.partitions
        if name not in existing:
            to_create.append(NewTopic(name, partitions, 1, config=spec.config()))
            actions[name] = f"created ({partitions} partitions)"
            continue
        have = len(existing[name].partitions)
        if have < partitions:
            to_grow.append(NewPartitions(name, partitions))
            actions[name] = f"partitions {have} -> {partitions}"
        else:
            actions[name] = "up to date"
        to_alter.append(ConfigResource("topic", name, set_config=spec.config()))
    futures = {}
    if to_create:
        futures.update(admin.create_topics(to_create, request_timeout=timeout))
    if to_grow:
        futures.update(admin.create_partitions(to_grow, request_timeout=timeout))
    if to_alter:
        futures.update({str(k): v for k, v in admin.alter_configs(to_alter, request_timeout=timeout).items()})
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise RuntimeError(f"topic {name}: {exc}") from exc
    _wait_until_listed(admin, [t.topic for t in to_create], timeout)
    return actions


def _wait_until_listed(admin: AdminClient, names: list[str], timeout: float) -> None:
    """A created topic reaches the brokers' metadata a moment after the controller accepts it:
    wait, so a client started right after ``apply_topics`` finds every topic."""
    deadline = time.monotonic() + timeout
    while names:
        listed = admin.list_topics(timeout=timeout).topics
        names = [n for n in names if n not in listed or listed[n].error is not None]
        if names and time.monotonic() > deadline:
            raise RuntimeError(f"topics not visible after {timeout:.0f}s: {names}")
        if names:
            time.sleep(0.1)


class StopWaiting(Exception):
    """The caller asked to stop while a call was waiting for the broker."""


# Partition leadership still settling (a topic created a moment ago, a broker restarting): some
# calls (offset lookups) report these without flagging them retriable, yet waiting is the answer.
_LEADERSHIP_MOVING = frozenset(
    {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}
)


def retry_retriable(
    what: str,
    call: Callable[[], T],
    budget_s: float,
    should_stop: Callable[[], bool] = lambda: False,
    on_wait: Callable[[], None] = lambda: None,
) -> T:
    """``call`` again with backoff while it fails with a retriable Kafka error (a broker that is
    away), for at most ``budget_s``; anything else, or past the budget, is raised."""
    deadline = time.monotonic() + budget_s
    backoff = Backoff(initial_s=0.1, cap_s=5.0)
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() in _LEADERSHIP_MOVING
            if error.fatal() or error.txn_requires_abort() or not transient:
                raise
            if should_stop():
                raise StopWaiting from exc
            if time.monotonic() >= deadline:
                log.error("broker away too long", extra={"call": what, "error": str(exc)})
                raise
            log.warning("retrying", extra={"call": what, "error": str(exc)})
            on_wait()
            time.sleep(backoff.next_delay())
