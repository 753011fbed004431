"""Pair worker: closed 1 m bars -> :class:`PairStats` of the candidate pairs on ``pairs.1m``.

For each configured pair ``A/B`` (settings ``signals.pairs``) and each minute where both legs have
a 1 m bar, once both legs' partitions' watermarks have passed that minute (the bars of a minute
precede the marker that passes it), the worker publishes the statistics of
:func:`~tickforge.platform.signals.pairs.pair_stats` over the aligned bars of the last
``pair_lookback_minutes`` minutes, keyed by the pair ``"A/B"``. Nothing is published before
``pair_min_history`` aligned bars (nor while a leg is flat). The window is bounded in time, not in
bars, so what a restart must replay is bounded too.

The two legs of a pair usually sit on different partitions, so the partition tasks of one worker
share a :class:`PairBook` (run one instance: it needs every partition of ``bars.1m``).

Exactly once: records are produced in the runtime's transactions with the input offsets. A bar is
needed until the slowest leg partition's watermark passes ``window_end + lookback`` (the task's
watermark is that minimum), so a restart replays every bar an unpublished minute can use. Which
minutes were published is known exactly from the committed output: at start (after the producer's
``init_transactions`` has fenced any zombie) the worker reads each pair's last committed
``as_of`` from ``pairs.1m`` and publishes only later minutes, whether the trigger comes from a
replayed or a new message (a minute's statistics only depend on the bars, so they are identical).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import msgspec
import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.contracts import JSON_ENCODER
from tickforge.platform.io.kafka import make_consumer, marker_watermark, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.signals.pairs import PairConfig, PairStats, pair_stats
from tickforge.platform.topics import PAIRS, bar_topic, partition_for
from tickforge.streaming import metrics
from tickforge.streaming.codec import bar_or_dead_letter
from tickforge.streaming.runtime import InputDrivenTask, Output, TransactionalWorker

log = logging.getLogger(__name__)

NAME = "pair-worker"
SOURCE = "1m"
MINUTE_MS = 60_000
PAIR_STATS_DECODER = msgspec.json.Decoder(PairStats)


def pair_key(a: str, b: str) -> str:
    return f"{a}/{b}"


class _Leg:
    """One symbol's recent 1 m closes, in time order."""

    __slots__ = ("ws", "close")

    def __init__(self) -> None:
        self.ws: list[int] = []
        self.close: list[float] = []

    def add(self, window_start: int, close: float) -> bool:
        if self.ws and window_start <= self.ws[-1]:
            return False  # a duplicate or a replayed bar: never applied twice
        self.ws.append(window_start)
        self.close.append(close)
        return True

    def trim(self, keep_from: int) -> None:
        cut = int(np.searchsorted(np.asarray(self.ws, np.int64), keep_from, side="left"))
        if cut:
            del self.ws[:cut], self.close[:cut]


class PairBook:
    """The candidate pairs' state, shared by the partition tasks of one pair worker."""

    def __init__(
        self,
        pairs: Iterable[tuple[str, str]],
        partitions: int,
        lookback_minutes: int,
        min_history: int,
        lateness_ms: int,
        published: dict[str, int] | None = None,
        pinned: Iterable[str] = (),
    ) -> None:
        self.pairs = list(pairs)
        self.partitions = partitions
        self.pinned = tuple(pinned)
        self.lookback_ms = lookback_minutes * MINUTE_MS
        self.lateness_ms = lateness_ms
        self.config = PairConfig(lookback=lookback_minutes, min_history=min_history)
        self.legs = {s: _Leg() for pair in self.pairs for s in pair}
        self.leg_partitions = {partition_for(s, partitions, self.pinned) for s in self.legs}
        self.watermarks: dict[int, int] = {}
        # pair key -> window_end of the last minute handled (published or below min history)
        self.cursor: dict[str, int] = {pair_key(a, b): NO_WATERMARK for a, b in self.pairs}
        for key, as_of in (published or {}).items():
            if key in self.cursor:
                self.cursor[key] = as_of

    def watermark_of(self, partition: int) -> int:
        wm = self.watermarks.get(partition, NO_WATERMARK)
        if partition not in self.leg_partitions:
            return wm
        # A leg's bar is needed until the slowest leg partition is past it.
        return min(self.watermarks.get(p, NO_WATERMARK) for p in self.leg_partitions)

    def advance(self, partition: int, watermark: int) -> None:
        if watermark > self.watermarks.get(partition, NO_WATERMARK):
            self.watermarks[partition] = watermark

    def add_bar(self, symbol: str, window_start: int, close: float) -> int:
        """Apply a bar; returns the watermark until which its message is needed."""
        leg = self.legs.get(symbol)
        if leg is None or not leg.add(window_start, close):
            return NO_WATERMARK
        return window_start + MINUTE_MS + self.lookback_ms + self.lateness_ms

    def ready(self) -> list[PairStats]:
        """Statistics of every aligned minute both legs' watermarks have passed, in time order."""
        out: list[PairStats] = []
        for a, b in self.pairs:
            key = pair_key(a, b)
            passed = min(
                self.watermarks.get(partition_for(s, self.partitions, self.pinned), NO_WATERMARK) for s in (a, b)
            )
            if passed == NO_WATERMARK:
                continue
            leg_a, leg_b = self.legs[a], self.legs[b]
            ws_a, ws_b = np.asarray(leg_a.ws, np.int64), np.asarray(leg_b.ws, np.int64)
            common, ia, ib = np.intersect1d(ws_a, ws_b, assume_unique=True, return_indices=True)
            ends = common + MINUTE_MS
            todo = np.flatnonzero((ends > self.cursor[key]) & (ends + self.lateness_ms <= passed))
            if not len(todo):
                continue
            close_a = np.asarray(leg_a.close)[ia]
            close_b = np.asarray(leg_b.close)[ib]
            for i in todo.tolist():
                as_of = int(ends[i])
                first = int(np.searchsorted(ends, as_of - self.lookback_ms, side="right"))
                stats = pair_stats(
                    close_a[first : i + 1],
                    close_b[first : i + 1],
                    symbol_a=a,
                    symbol_b=b,
                    as_of=as_of,
                    config=self.config,
                )
                if stats is not None:
                    out.append(stats)
                self.cursor[key] = as_of
        self._trim()
        return out

    def _trim(self) -> None:
        for symbol, leg in self.legs.items():
            cursors = [self.cursor[pair_key(a, b)] for a, b in self.pairs if symbol in (a, b)]
            oldest = min(cursors)
            if oldest != NO_WATERMARK:
                leg.trim(oldest - self.lookback_ms - MINUTE_MS)


class PairTask(InputDrivenTask):
    """One ``bars.1m`` partition's view of the shared :class:`PairBook`."""

    def __init__(self, settings: Settings, book: PairBook, partition: int, start_watermark: int) -> None:
        self.book = book
        self.partition = partition
        self.book.advance(partition, start_watermark)
        self.source = topic_name(settings, bar_topic(SOURCE))
        self.topic = topic_name(settings, PAIRS)
        self.topic_partitions = settings.kafka.partitions

    @property
    def watermark(self) -> int:
        return self.book.watermark_of(self.partition)

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            self.book.advance(self.partition, marker)
            return NO_WATERMARK
        bar = bar_or_dead_letter(msg, out, self.source)
        if bar is None:
            return NO_WATERMARK
        return self.book.add_bar(bar.symbol, bar.window_start, bar.close)

    def close(self, out: Output) -> None:
        # Decided, not suppressed while replaying: a minute may become ready while this partition
        # replays although it was not published before the restart (its other leg is on another
        # partition). The book's cursors, read from the committed output, decide instead.
        for stats in self.book.ready():
            key = pair_key(stats.symbol_a, stats.symbol_b)
            out.send_decided(self.topic, key, JSON_ENCODER.encode(stats), partition_for(key, self.topic_partitions))
            metrics.BARS_OUT.labels(worker=NAME, timeframe=SOURCE).inc()


def last_published(
    settings: Settings, keys: Iterable[str], chunk: int = 2_000, timeout: float = 30.0
) -> dict[str, int]:
    """The ``as_of`` of each pair's last committed record on ``pairs.1m`` (absent: none).

    Reads each partition backwards in chunks until every pair keyed to it is found.
    """
    topic = topic_name(settings, PAIRS)
    partitions = settings.kafka.partitions
    wanted: dict[int, set[str]] = {}
    for key in keys:
        wanted.setdefault(partition_for(key, partitions), set()).add(key)
    consumer = make_consumer(
        settings, f"{settings.kafka.topic_prefix}{NAME}-recovery", **{"enable.partition.eof": True}
    )
    found: dict[str, int] = {}
    try:
        for partition, missing in wanted.items():
            low, high = _watermark_offsets(consumer, TopicPartition(topic, partition), timeout)
            hi = high
            while missing and hi > low:
                start = max(low, hi - chunk)
                consumer.assign([TopicPartition(topic, partition, start)])
                latest: dict[str, int] = {}
                deadline = time.monotonic() + timeout
                done = False
                while not done and time.monotonic() < deadline:
                    for msg in consumer.consume(1_000, timeout=0.5):
                        err = msg.error()
                        if err is not None:
                            if err.code() == KafkaError._PARTITION_EOF:
                                done = True
                                continue
                            raise RuntimeError(f"reading {topic}: {err}")
                        if (msg.offset() or 0) >= hi:
                            done = True
                            continue
                        key = (msg.key() or b"").decode()
                        if key in missing:
                            latest[key] = PAIR_STATS_DECODER.decode(msg.value() or b"").as_of
                if not done:
                    raise RuntimeError(f"timed out reading {topic}[{partition}] back from {start}")
                for key, as_of in latest.items():
                    found[key] = as_of
                    missing.discard(key)
                hi = start
    finally:
        consumer.close()
    return found


def _watermark_offsets(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """Low and high offsets, retried while the broker's metadata settles (new topic, restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def make_worker(settings: Settings, instance_id: str = "0") -> TransactionalWorker:
    signals = settings.signals
    pairs = signals.pair_list()
    books: list[PairBook] = []
    assigned: set[int] = set()

    def task(partition: int, start_watermark: int) -> PairTask:
        # Built on the first assignment, after init_transactions fenced any previous instance, so
        # the committed pairs topic is final. A partition assigned again (a rebalance) means the
        # runtime replays from the checkpoints: start over from a fresh book and fresh cursors.
        if not books or partition in assigned:
            published = last_published(settings, [pair_key(a, b) for a, b in pairs])
            log.info("pair cursors", extra={"worker": NAME, "published": published})
            books[:] = [
                PairBook(
                    pairs,
                    settings.kafka.partitions,
                    signals.pair_lookback_minutes,
                    signals.pair_min_history,
                    settings.streaming.allowed_lateness_ms,
                    published,
                    settings.kafka.pinned_symbols,
                )
            ]
            assigned.clear()
        assigned.add(partition)
        return PairTask(settings, books[0], partition, start_watermark)

    return TransactionalWorker(settings, NAME, bar_topic(SOURCE), task, instance_id=instance_id)
