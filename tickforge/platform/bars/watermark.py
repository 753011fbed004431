"""Event-time watermark with an idle advance for live feeds.

The watermark is the largest event time accepted so far. Event time alone never closes the last
window of a session or of a quiet partition, so a partition that has been idle for
``idle_timeout_ms`` of wall time may also move its watermark forward with the wall clock from the
last event seen, as Bytewax does.

Event time and wall time are different clocks, and the idle advance is right only where the first
tracks the second: a live feed. A partition counts as live while the event time of its input is
within ``live_lag_ms`` of the time that input arrived (the Kafka message timestamp, so a restart
replaying the same messages decides the same way). A replay or backfill of past data is never
live, whatever its speed, rate or pauses: its windows close on event time and end-of-session
markers only, so it produces the same bars as the offline build.
"""

from __future__ import annotations

import time
from collections.abc import Callable

NO_WATERMARK = -(2**62)
# Event time may jump ahead by at most this much between a partition's watermark and a tick: a
# replayed session crosses weekends and holidays, while one tick stamped years ahead would
# otherwise carry the watermark with it and turn every later tick late.
MAX_EVENT_JUMP_MS = 7 * 86_400_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Watermark:
    def __init__(
        self,
        idle_timeout_ms: int = 2_000,
        clock_ms: Callable[[], int] = wall_ms,
        start: int = NO_WATERMARK,
        live_lag_ms: int = 10_000,
    ) -> None:
        self.idle_timeout_ms = idle_timeout_ms
        self.live_lag_ms = live_lag_ms
        self._clock_ms = clock_ms
        self.value = start
        self._max_event_ts = start
        self._last_arrival = clock_ms()
        self.live = False

    def observe(self, max_event_ts: int, arrived_ms: int | None = None) -> int:
        """Data arrived (at ``arrived_ms``, wall clock when not given): event time advances to
        its max (never backwards), and whether it tracks the arrival clock is noted."""
        now = self._clock_ms()
        self._last_arrival = now
        if max_event_ts > self._max_event_ts:
            self._max_event_ts = max_event_ts
        if max_event_ts > self.value:
            self.value = max_event_ts
        arrived = now if arrived_ms is None else arrived_ms
        self.live = arrived - self._max_event_ts <= self.live_lag_ms
        return self.value

    def advance_to(self, ts: int) -> int:
        """An explicit marker (end of a replayed session, an upstream watermark)."""
        if ts > self.value:
            self.value = ts
        return self.value

    def idle_advance(self) -> int:
        """Advance with the wall clock when a live source has been idle long enough."""
        if self._max_event_ts == NO_WATERMARK or not self.live:
            return self.value
        idle_for = self._clock_ms() - self._last_arrival
        if idle_for >= self.idle_timeout_ms:
            self.advance_to(self._max_event_ts + idle_for)
        return self.value
