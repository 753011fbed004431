"""The US equity regular session (09:30-16:00 New York) the paper path trades by default.

Sessions themselves stay the research engine's (New York trading days of the bars); these rules
only choose which bars are traded, offline (:func:`regular_hours` over frames) and live
(:func:`regular_session` for one timestamp: a bar ending at the close is the session's last).
"""

from __future__ import annotations

from datetime import datetime, time

import polars as pl

from tickforge.research.bars import NEW_YORK, SESSION_ZONE

OPEN, CLOSE = time(9, 30), time(16, 0)


def regular_hours(frame: pl.DataFrame, column: str = "ts_ms") -> pl.DataFrame:
    """The rows whose ``column`` (epoch ms: a tick's ``ts_ms``, a bar's ``window_start``) falls
    09:30 to 16:00 New York: bars of those hours end their session at 16:00, where the book is
    deep enough to flatten, not at 20:00 in the thin after-hours book where the data ends. For
    bars no longer than 30 minutes, the bars of the regular session's trades are the regular
    session's bars."""
    local = pl.from_epoch(pl.col(column), time_unit="ms").dt.convert_time_zone(SESSION_ZONE)
    minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    return frame.filter((minute >= OPEN.hour * 60 + OPEN.minute) & (minute < CLOSE.hour * 60 + CLOSE.minute))


def regular_session(ts_ms: int) -> tuple[int, int]:
    """``[open_ms, close_ms)`` of the regular session on the New York day of ``ts_ms``."""
    day = datetime.fromtimestamp(ts_ms // 1000, NEW_YORK).date()
    return (int(datetime.combine(day, OPEN, NEW_YORK).timestamp() * 1000),
            int(datetime.combine(day, CLOSE, NEW_YORK).timestamp() * 1000))
