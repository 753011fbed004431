"""The live view's Kafka feed: a background thread that fills a :class:`LiveCache` and another
that polls the workers' consumer lag.

The data consumer reads ``read_committed`` and commits nothing (the view only reads), starting a
bounded distance before the end of each topic (dead letters: from the start). The lag of each
worker of the registry is the end of its input topics minus the position it has committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import cache, partial
from typing import TypeVar

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from tickforge.dashboard.cache import LiveCache, wall_ms
from tickforge.platform.contracts import BAR_DECODER, DEAD_LETTER_DECODER, SIGNAL_DECODER
from tickforge.platform.io.kafka import make_consumer, marker_watermark, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER, PAIRS, SIGNALS, bar_topic
from tickforge.streaming import registry
from tickforge.streaming.runtime import Checkpoint

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEFRAMES = ("1s", "1m", "5m")  # the bar topics the view reads


@cache
def _pair_decoder() -> msgspec.json.Decoder:
    from tickforge.platform.signals.pairs import PairStats  # statsmodels: loaded by the feed thread only

    return msgspec.json.Decoder(PairStats)


_CHECKPOINT_DECODER = msgspec.json.Decoder(Checkpoint)


class KafkaFeed:
    """Background consumer thread that fills a :class:`LiveCache` (and polls worker lag)."""

    def __init__(
        self, settings: Settings, cache: LiveCache, backfill: int | None = None, lag_every_s: float = 3.0
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.backfill = backfill if backfill is not None else cache.max_bars * 4
        self.lag_every_s = lag_every_s
        # topic -> (what it carries, the timeframe of its bars)
        self.kinds = {topic_name(settings, bar_topic(tf)): ("bar", tf) for tf in TIMEFRAMES}
        self.kinds[topic_name(settings, SIGNALS)] = ("signal", "1s")
        self.kinds[topic_name(settings, PAIRS)] = ("pair", "1m")
        self.kinds[topic_name(settings, DEAD_LETTER)] = ("dead", "")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tickforge-dashboard-feed", daemon=True)
        # Lag queries wait on group coordinators: their own thread, so they never hold up the data.
        self._lag_thread = threading.Thread(target=self._run_lag, name="tickforge-dashboard-lag", daemon=True)
        self._live_from: dict[tuple[str, int], int] = {}
        self.error: str | None = None

    def start(self) -> KafkaFeed:
        self._thread.start()
        self._lag_thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._lag_thread.join(timeout)

    def _own_consumer(self, purpose: str) -> Consumer:
        """A consumer in a group of its own that never commits (the view only reads)."""
        return make_consumer(self.settings, f"{self.settings.kafka.topic_prefix}{purpose}-{time.time_ns()}")

    def _run(self) -> None:
        try:
            consumer = self._own_consumer("dashboard")
            try:
                self._assign(consumer)
                while not self._stop.is_set():
                    for msg in consumer.consume(2_000, timeout=0.2):
                        self._ingest(msg)
            finally:
                consumer.close()
        except Exception as exc:  # surfaced on the page, not swallowed
            log.exception("dashboard feed failed")
            self.error = f"{type(exc).__name__}: {exc}"

    def _run_lag(self) -> None:
        metadata = self._own_consumer("dashboard-lag")
        probes: dict[str, Consumer] = {}
        try:
            while not self._stop.is_set():
                try:
                    self.cache.set_lag(worker_lag(self.settings, metadata, probes))
                except KafkaException as exc:
                    log.warning("dashboard lag", extra={"error": str(exc)})
                self._stop.wait(self.lag_every_s)
        finally:
            metadata.close()
            for probe in probes.values():
                probe.close()

    def _assign(self, consumer: Consumer) -> None:
        """Every partition of the view's topics, ``backfill`` messages before the end (dead letters: all)."""
        metadata = _retry(lambda: consumer.list_topics(timeout=10))
        assignment = []
        for name, (kind, _) in self.kinds.items():
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                continue
            for partition in topic.partitions:
                low, high = _retry(partial(consumer.get_watermark_offsets, TopicPartition(name, partition), timeout=10))
                start = low if kind == "dead" else max(low, high - self.backfill)
                assignment.append(TopicPartition(name, partition, start))
                self._live_from[(name, partition)] = high
        consumer.assign(assignment)

    def _ingest(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("dashboard feed", extra={"error": str(err)})
            return
        topic, value = msg.topic() or "", msg.value() or b""
        kind, timeframe = self.kinds.get(topic, ("", ""))
        watermark = marker_watermark(msg)
        if watermark is not None:
            self.cache.set_watermark(topic.removeprefix(self.settings.kafka.topic_prefix), watermark)
            return
        received = wall_ms()
        try:
            if kind == "bar":
                # Latency only of what arrives live: the backfill at start is old by construction.
                live = (msg.offset() or 0) >= self._live_from.get((topic, msg.partition() or 0), 0)
                bar = BAR_DECODER.decode(value)
                if bar.timeframe != timeframe:
                    log.warning(
                        "dashboard feed: bar of another timeframe", extra={"topic": topic, "bar": bar.timeframe}
                    )
                    return
                self.cache.add_bar(bar, received, measure=live)
            elif kind == "signal":
                self.cache.add_signal(SIGNAL_DECODER.decode(value), received)
            elif kind == "pair":
                self.cache.add_pair(_pair_decoder().decode(value), received)
            elif kind == "dead":
                self.cache.add_dead_letter(DEAD_LETTER_DECODER.decode(value).reason)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("dashboard feed: undecodable", extra={"topic": topic, "error": str(exc)})


def committed_position(tp: TopicPartition) -> int:
    """Where a worker has read up to in a partition, from its committed offset.

    The exactly-once workers commit the oldest input still needed (a replay point) and keep their
    real position in the checkpoint metadata; that position is what counts. A plain commit (the
    raw sink's) is the position itself.
    """
    if tp.metadata:
        try:
            return max(tp.offset, _CHECKPOINT_DECODER.decode(tp.metadata).hi)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    return int(tp.offset)


def worker_lag(settings: Settings, consumer: Consumer, probes: dict[str, Consumer]) -> dict[str, int]:
    """Messages each consuming worker of the registry still has to read (workers that have
    committed nothing yet are left out). ``probes`` keeps one consumer per worker group between
    calls; it only reads the group's committed offsets and never joins the group."""
    lag: dict[str, int] = {}
    for spec in registry.consuming():
        probe = probes.get(spec.name)
        if probe is None:
            probe = probes[spec.name] = make_consumer(settings, spec.group_id(settings.kafka.topic_prefix))
        behind, known = 0, False
        try:
            for topic in spec.input_topics:
                name = topic_name(settings, topic)
                meta = consumer.list_topics(name, timeout=5).topics.get(name)
                if meta is None or meta.error is not None:
                    continue
                parts = [TopicPartition(name, p) for p in meta.partitions]
                for tp in probe.committed(parts, timeout=5):
                    if tp.offset < 0:
                        continue
                    high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                    behind += max(0, high - committed_position(tp))
                    known = True
        except KafkaException as exc:
            log.warning("dashboard lag", extra={"worker": spec.name, "error": str(exc)})
            continue
        if known:
            lag[spec.name] = behind
    return lag


def _retry(call: Callable[[], T], attempts: int = 25, pause: float = 0.2) -> T:
    """``call`` again while Kafka raises (the broker may still be starting when the view starts)."""
    for attempt in range(attempts):
        try:
            return call()
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")
