"""The live view's memory: a bounded, thread-safe cache of the latest bars, signals and pair
statistics, with the pipeline health figures the badges grade. Filled by the feed thread (or by
:func:`feed_cache` without Kafka); read by the page. Knows no Kafka and no Streamlit."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec
import polars as pl

from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.platform.contracts import Bar, Signal
from tickforge.platform.io.postgres import BAR_SCHEMA

if TYPE_CHECKING:  # the pairs module loads statsmodels (seconds): only the feed thread needs it
    from tickforge.platform.signals.pairs import PairStats


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


class _Windowed(Protocol):
    @property
    def window_start(self) -> int: ...


W = TypeVar("W", bound=_Windowed)


class LiveCache:
    """Latest bars, signals and pair statistics (bounded), thread-safe."""

    def __init__(self, max_bars: int = 3_600) -> None:
        self.max_bars = max_bars
        self._lock = threading.Lock()
        self._bars: dict[tuple[str, str], deque[Bar]] = {}
        self._signals: dict[str, deque[Signal]] = {}
        self._pairs: dict[str, PairStats] = {}
        self._dead: Counter[str] = Counter()
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

    def most_active(self, span_ms: int = 3_600_000) -> str | None:
        """The symbol with the most trades in the last ``span_ms`` of event time the cache holds
        (up to the latest bar of any symbol), on the finest timeframe held; ties by name."""
        with self._lock:
            held = {tf for tf, _ in self._bars}
            if not held:
                return None
            finest = min(held, key=timeframe_ms)
            rings = {symbol: ring for (tf, symbol), ring in self._bars.items() if tf == finest}
            since = max(ring[-1].window_end for ring in rings.values()) - span_ms
            trades = {
                symbol: sum(b.trade_count for b in ring if b.window_end > since) for symbol, ring in rings.items()
            }
        return min(trades, key=lambda symbol: (-trades[symbol], symbol))

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


def _append_in_order(ring: deque[W], item: W) -> None:
    """Append a record keyed by window_start; a repeat replaces, an older one is dropped."""
    if ring:
        last = ring[-1].window_start
        if item.window_start == last:
            ring[-1] = item
            return
        if item.window_start < last:
            return
    ring.append(item)


def bars_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """Bar rows (dicts of bar fields) as a frame of the golden bar columns, typed as the store types them."""
    if not rows:
        return pl.DataFrame(schema=BAR_SCHEMA)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.select(
        [pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in BAR_SCHEMA.items()]
    )


def feed_cache(cache: LiveCache, records: Iterable[Bar | Signal | PairStats], received_ms: int | None = None) -> None:
    """Put decoded records into a cache (the feed's path without Kafka: offline tools, tests)."""
    for record in records:
        if isinstance(record, Bar):
            cache.add_bar(record, received_ms)
        elif isinstance(record, Signal):
            cache.add_signal(record, received_ms)
        else:
            cache.add_pair(record, received_ms)
