"""Data access of the live view: a bounded in-memory cache fed from Kafka, history from PostgreSQL.

:class:`LiveCache` keeps the latest N bars per symbol and timeframe, the latest N signals per
symbol, the latest statistics per pair, dead-letter counts and pipeline health figures. A
:class:`KafkaFeed` thread fills it (``read_committed``, no consumer group commits: the view only
reads) starting a bounded distance before the end of each topic, and polls the workers' consumer
groups for their lag. :class:`History` reads the golden bar tables. Nothing here imports
Streamlit, so it is testable on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

import msgspec
import polars as pl
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tickforge.platform.contracts import BAR_DECODER, DEAD_LETTER_DECODER, SIGNAL_DECODER, Bar, Signal
from tickforge.platform.io.kafka import KIND_HEADER, KIND_WATERMARK, client_config, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER, PAIRS, SIGNALS, TICKS, bar_topic

if TYPE_CHECKING:  # the pairs module loads statsmodels (seconds): only the feed thread needs it
    from tickforge.platform.signals.pairs import PairStats

log = logging.getLogger(__name__)

TIMEFRAMES = ("1s", "1m", "5m")
BAR_COLUMNS = ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume",
               "notional", "vwap", "trade_count", "spread_bps", "imbalance", "closed_at_ms"]
# The workers whose consumer-group lag the view shows: group name -> input topics.
WORKER_INPUTS = {
    "bar-worker": [TICKS],
    "timeframe-worker": [bar_topic("1s")],
    "signal-worker": [bar_topic("1s")],
    "pair-worker": [bar_topic("1m")],
    "bar-store": [bar_topic(tf) for tf in ("1s", "1m", "3m", "5m", "15m")],
}


@cache
def _pair_decoder() -> msgspec.json.Decoder:
    from tickforge.platform.signals.pairs import PairStats

    return msgspec.json.Decoder(PairStats)
_CHECKPOINT_DECODER = msgspec.json.Decoder(dict)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Health:
    """Pipeline health as the view last saw it."""

    latency_ms: list[int] = field(default_factory=list)  # recent bar emit -> view receipt
    last_received_ms: int | None = None  # wall clock of the last data message
    last_event_ms: int | None = None  # latest window_end seen on a bar topic
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    lag: dict[str, int] = field(default_factory=dict)  # worker -> messages behind
    watermarks: dict[str, int] = field(default_factory=dict)  # topic kind -> latest marker


class LiveCache:
    """Latest bars, signals and pair statistics (bounded), thread-safe."""

    def __init__(self, max_bars: int = 3_600) -> None:
        self.max_bars = max_bars
        self._lock = threading.Lock()
        self._bars: dict[tuple[str, str], deque[Bar]] = {}
        self._signals: dict[str, deque[Signal]] = {}
        self._pairs: dict[str, PairStats] = {}
        self._dead = Counter()
        self._latency: deque[int] = deque(maxlen=500)
        self._last_received: int | None = None
        self._last_event: int | None = None
        self._lag: dict[str, int] = {}
        self._watermarks: dict[str, int] = {}
        self.messages = 0

    # -- writers (the feed thread) ---------------------------------------------------------
    def add_bar(self, bar: Bar, received_ms: int | None = None, measure: bool = True) -> None:
        with self._lock:
            ring = self._bars.setdefault((bar.timeframe, bar.symbol), deque(maxlen=self.max_bars))
            _append_in_order(ring, bar)
            self._touch(received_ms)
            if self._last_event is None or bar.window_end > self._last_event:
                self._last_event = bar.window_end
            if measure and received_ms is not None and bar.closed_at_ms is not None and bar.timeframe == "1s":
                self._latency.append(received_ms - bar.closed_at_ms)

    def add_signal(self, signal: Signal, received_ms: int | None = None) -> None:
        with self._lock:
            ring = self._signals.setdefault(signal.symbol, deque(maxlen=self.max_bars))
            _append_in_order(ring, signal)
            self._touch(received_ms)

    def add_pair(self, stats: PairStats, received_ms: int | None = None) -> None:
        key = f"{stats.symbol_a}/{stats.symbol_b}"
        with self._lock:
            held = self._pairs.get(key)
            if held is None or stats.as_of >= held.as_of:
                self._pairs[key] = stats
            self._touch(received_ms)

    def add_dead_letter(self, reason: str) -> None:
        with self._lock:
            self._dead[reason] += 1

    def set_watermark(self, kind: str, watermark_ms: int) -> None:
        with self._lock:
            self._watermarks[kind] = max(watermark_ms, self._watermarks.get(kind, watermark_ms))

    def set_lag(self, lag: dict[str, int]) -> None:
        with self._lock:
            self._lag = dict(lag)

    def _touch(self, received_ms: int | None) -> None:
        self.messages += 1
        if received_ms is not None:
            self._last_received = received_ms

    # -- readers (the app) -------------------------------------------------------------------
    def symbols(self) -> list[str]:
        with self._lock:
            return sorted({symbol for _, symbol in self._bars} | set(self._signals))

    def bars(self, symbol: str, timeframe: str) -> pl.DataFrame:
        with self._lock:
            rows = [msgspec.structs.asdict(b) for b in self._bars.get((timeframe, symbol), ())]
        return bars_frame(rows)

    def signals(self, symbol: str) -> pl.DataFrame:
        with self._lock:
            rows = [msgspec.structs.asdict(s) for s in self._signals.get(symbol, ())]
        if not rows:
            return pl.DataFrame()
        return pl.DataFrame(rows, infer_schema_length=None).with_columns(
            pl.exclude("symbol", "session", "is_final", "seq", "window_start", "window_end").cast(pl.Float64)
        )

    def pairs(self) -> list[PairStats]:
        with self._lock:
            return [self._pairs[k] for k in sorted(self._pairs)]

    def health(self) -> Health:
        with self._lock:
            return Health(
                latency_ms=list(self._latency),
                last_received_ms=self._last_received,
                last_event_ms=self._last_event,
                dead_letters=dict(self._dead),
                lag=dict(self._lag),
                watermarks=dict(self._watermarks),
            )


def _append_in_order(ring: deque, item) -> None:
    """Append a record keyed by window_start; a repeat replaces, an older one is dropped."""
    if ring:
        last = ring[-1].window_start
        if item.window_start == last:
            ring[-1] = item
            return
        if item.window_start < last:
            return
    ring.append(item)


def bars_frame(rows: list[dict]) -> pl.DataFrame:
    schema = {c: pl.Float64 for c in ("open", "high", "low", "close", "volume", "notional", "vwap",
                                       "spread_bps", "imbalance")}
    schema |= {"symbol": pl.String, "window_start": pl.Int64, "window_end": pl.Int64,
               "trade_count": pl.Int64, "closed_at_ms": pl.Int64}
    if not rows:
        return pl.DataFrame(schema={c: schema[c] for c in BAR_COLUMNS})
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.select([pl.col(c).cast(schema[c]) if c in frame.columns else pl.lit(None, schema[c]).alias(c)
                         for c in BAR_COLUMNS])


class KafkaFeed:
    """Background consumer thread that fills a :class:`LiveCache` (and polls worker lag)."""

    def __init__(self, settings: Settings, cache: LiveCache, backfill: int | None = None, lag_every_s: float = 3.0):
        self.settings = settings
        self.cache = cache
        self.backfill = backfill if backfill is not None else cache.max_bars * 4
        self.lag_every_s = lag_every_s
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

    def _consumer(self, group: str, **extra) -> Consumer:
        return Consumer(client_config(self.settings, **{
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            **extra,
        }))

    def _run(self) -> None:
        try:
            consumer = self._consumer(f"{self.settings.kafka.topic_prefix}dashboard-{time.time_ns()}")
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
        metadata = self._consumer(f"{self.settings.kafka.topic_prefix}dashboard-lag-{time.time_ns()}")
        probes: dict[str, Consumer] = {}
        try:
            while not self._stop.is_set():
                try:
                    self.cache.set_lag(self._lag(metadata, probes))
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
                low, high = _retry(lambda p=partition: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10))
                start = low if kind == "dead" else max(low, high - self.backfill)
                assignment.append(TopicPartition(name, partition, start))
                self._live_from[(name, partition)] = high
        consumer.assign(assignment)

    def _ingest(self, msg) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("dashboard feed", extra={"error": str(err)})
            return
        kind, _ = self.kinds.get(msg.topic(), ("", ""))
        headers = msg.headers() or []
        if any(k == KIND_HEADER and v == KIND_WATERMARK for k, v in headers):
            self.cache.set_watermark(msg.topic().removeprefix(self.settings.kafka.topic_prefix),
                                     msgspec.json.decode(msg.value())["watermark_ms"])
            return
        received = wall_ms()
        try:
            if kind == "bar":
                # Latency only of what arrives live: the backfill at start is old by construction.
                live = msg.offset() >= self._live_from.get((msg.topic(), msg.partition()), 0)
                self.cache.add_bar(BAR_DECODER.decode(msg.value()), received, measure=live)
            elif kind == "signal":
                self.cache.add_signal(SIGNAL_DECODER.decode(msg.value()), received)
            elif kind == "pair":
                self.cache.add_pair(_pair_decoder().decode(msg.value()), received)
            elif kind == "dead":
                self.cache.add_dead_letter(DEAD_LETTER_DECODER.decode(msg.value()).reason)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("dashboard feed: undecodable", extra={"topic": msg.topic(), "error": str(exc)})

    def _lag(self, consumer: Consumer, probes: dict[str, Consumer]) -> dict[str, int]:
        """Messages each worker still has to read: end offsets minus its position.

        The exactly-once workers commit the oldest input still needed (a replay point) and keep
        their real position in the checkpoint metadata (``hi``); that position is what counts.
        """
        lag: dict[str, int] = {}
        prefix = self.settings.kafka.topic_prefix
        for worker, topics in WORKER_INPUTS.items():
            probe = probes.get(worker)
            if probe is None:
                probe = probes[worker] = self._consumer(f"{prefix}{worker}")
            behind, known = 0, False
            try:
                for topic in topics:
                    name = topic_name(self.settings, topic)
                    meta = consumer.list_topics(name, timeout=5).topics.get(name)
                    if meta is None or meta.error is not None:
                        continue
                    parts = [TopicPartition(name, p) for p in meta.partitions]
                    for tp in probe.committed(parts, timeout=5):
                        if tp.offset < 0:
                            continue
                        position = tp.offset
                        if tp.metadata:
                            try:
                                position = max(position, int(_CHECKPOINT_DECODER.decode(tp.metadata).get("hi", -1)))
                            except (msgspec.DecodeError, TypeError, ValueError):
                                pass
                        high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                        behind += max(0, high - position)
                        known = True
            except KafkaException as exc:
                log.warning("dashboard lag", extra={"worker": worker, "error": str(exc)})
                continue
            if known:
                lag[worker] = behind
        return lag


def _retry(call, attempts: int = 25, pause: float = 0.2):
    for attempt in range(attempts):
        try:
            return call()
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


class History:
    """Golden bars from PostgreSQL (what the bar store has made durable)."""

    def __init__(self, settings: Settings) -> None:
        self.dsn = settings.postgres.dsn.get_secret_value()
        self.schema = settings.postgres.schema_name

    def bars(self, symbol: str, timeframe: str, limit: int, since_ms: int | None = None) -> pl.DataFrame:
        import psycopg
        from psycopg import sql

        from tickforge.platform.io.postgres import bar_table

        query = sql.SQL(
            "SELECT {cols} FROM {table} WHERE symbol = %s AND window_start >= %s "
            "ORDER BY window_start DESC LIMIT %s"
        ).format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in BAR_COLUMNS),
            table=sql.Identifier(self.schema, bar_table(timeframe)),
        )
        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                rows = conn.execute(query, (symbol, since_ms if since_ms is not None else -(2**62), limit)).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return bars_frame([])
        return bars_frame([dict(zip(BAR_COLUMNS, row)) for row in reversed(rows)])

    def symbols(self) -> list[str]:
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                rows = conn.execute(
                    sql.SQL("SELECT DISTINCT symbol FROM {}").format(sql.Identifier(self.schema, "bars_1m"))
                ).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return []
        return sorted(r[0] for r in rows)


@dataclass
class DashboardSource:
    """What the app reads: the live cache, optional history, and the signal settings."""

    cache: LiveCache
    history: History | None
    session_tz: dict[str, str]
    feed: KafkaFeed | None = None

    _history_symbols: tuple[float, list[str]] = (0.0, [])

    def symbols(self, history_ttl_s: float = 10.0) -> list[str]:
        """Symbols with live or stored bars (the stored list is re-read at most every ttl)."""
        live = self.cache.symbols()
        if self.history is None:
            return live
        read_at, stored = self._history_symbols
        if time.monotonic() - read_at > history_ttl_s:
            try:
                stored = self.history.symbols()
            except Exception as exc:  # PostgreSQL down: the live data still shows
                log.warning("history symbols", extra={"error": str(exc)})
            self._history_symbols = (time.monotonic(), stored)
        return sorted(set(live) | set(stored))

    def feed_error(self) -> str | None:
        return self.feed.error if self.feed is not None else None


_OVERRIDE: list[DashboardSource] = []


def use_source(source: DashboardSource | None) -> None:
    """Make the app read this source instead of building one from settings (tests, embedding)."""
    _OVERRIDE[:] = [source] if source is not None else []


def build_source(settings: Settings) -> DashboardSource:
    cache = LiveCache(settings.signals.dashboard_cache_bars)
    feed = KafkaFeed(settings, cache).start()
    return DashboardSource(cache, History(settings), settings.signals.session_tz(), feed)


def overridden_source() -> DashboardSource | None:
    return _OVERRIDE[0] if _OVERRIDE else None


def feed_cache(cache: LiveCache, records: Iterable[Bar | Signal | PairStats], received_ms: int | None = None) -> None:
    """Put decoded records into a cache (the feed's path without Kafka: offline tools, tests)."""
    for record in records:
        if isinstance(record, Bar):
            cache.add_bar(record, received_ms)
        elif isinstance(record, Signal):
            cache.add_signal(record, received_ms)
        else:
            cache.add_pair(record, received_ms)
