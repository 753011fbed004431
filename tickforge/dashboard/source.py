"""What the live view reads, put together: the live cache, its Kafka feed, the golden-bar history,
the OMS tables and the symbols' exchange zones. The page asks this module for its source (tests hand it one)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tickforge.dashboard.cache import LiveCache
from tickforge.dashboard.feed import KafkaFeed
from tickforge.dashboard.history import History
from tickforge.dashboard.trading import TradingBook
from tickforge.platform.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DashboardSource:
    """What the app reads: the live cache, optional history and trading tables, and the symbols' zones."""

    cache: LiveCache
    history: History | None
    session_tz: Mapping[str, str]
    feed: KafkaFeed | None = None
    trading: TradingBook | None = None

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
    return DashboardSource(cache, History(settings), settings.signals.session_tz(), feed, TradingBook(settings))


def overridden_source() -> DashboardSource | None:
    return _OVERRIDE[0] if _OVERRIDE else None
