"""Event-time watermark with an idle advance.

The watermark is the largest event time accepted so far. Event time alone never closes the last
window of a session or of a quiet partition (LESSONS: Quix Streams' idle keys), so when no data has
arrived for ``idle_timeout_ms`` of wall time, the watermark also moves forward with the wall clock
from the last event seen, as Bytewax does. Replays and backfills do not idle, so they produce the
same bars as the live path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

NO_WATERMARK = -(2**62)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Watermark:
    def __init__(
        self,
        idle_timeout_ms: int = 2_000,
        clock_ms: Callable[[], int] = wall_ms,
        start: int = NO_WATERMARK,
    ) -> None:
        self.idle_timeout_ms = idle_timeout_ms
        self._clock_ms = clock_ms
        self.value = start
        self._max_event_ts = start
        self._last_arrival = clock_ms()

    def observe(self, max_event_ts: int) -> int:
        """Data arrived: event time advances to its max (never backwards)."""
        self._last_arrival = self._clock_ms()
        if max_event_ts > self._max_event_ts:
            self._max_event_ts = max_event_ts
        if max_event_ts > self.value:
            self.value = max_event_ts
        return self.value

    def advance_to(self, ts: int) -> int:
        """An explicit marker (end of a replayed session, an upstream watermark)."""
        if ts > self.value:
            self.value = ts
        return self.value

    def idle_advance(self) -> int:
        """Advance with the wall clock when the source has been idle long enough."""
        if self._max_event_ts == NO_WATERMARK:
            return self.value
        idle_for = self._clock_ms() - self._last_arrival
        if idle_for >= self.idle_timeout_ms:
            self.advance_to(self._max_event_ts + idle_for)
        return self.value
