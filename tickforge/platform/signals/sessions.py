"""Sessions: the calendar day of a bar's ``window_start`` in the symbol's session time zone.

``session_tz`` is either one IANA zone for every symbol or a mapping from symbol to zone (the
caller expands its symbol classes into it); a symbol absent from the mapping uses UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

SessionTz = str | Mapping[str, str]

DEFAULT_ZONE = "UTC"


def zone_for(symbol: str, session_tz: SessionTz) -> str:
    if isinstance(session_tz, str):
        return session_tz
    return session_tz.get(symbol, DEFAULT_ZONE)


@lru_cache(maxsize=64)
def tzinfo(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown session time zone {name!r}") from exc


def validate_session_tz(session_tz: SessionTz) -> None:
    names = [session_tz] if isinstance(session_tz, str) else list(session_tz.values())
    for name in names:
        tzinfo(name)


def session_bounds(window_start_ms: int, zone: str) -> tuple[str, int, int]:
    """The session label of a bar and the UTC interval ``[start_ms, end_ms)`` of that session.

    The streaming state caches the interval so that the common case, a bar inside its symbol's
    current session, is one vectorized comparison instead of a time-zone conversion per bar.
    Local midnights are resolved with ``fold=0``: a midnight skipped by a DST jump maps to the
    transition instant, which is where that day begins.
    """
    tz = tzinfo(zone)
    # Offsets are whole seconds, so the local date only depends on the floor second.
    day = datetime.fromtimestamp(window_start_ms // 1000, tz).date()
    return day.isoformat(), _midnight_ms(day, tz), _midnight_ms(day + timedelta(days=1), tz)


def _midnight_ms(day: date, tz: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()) * 1000


def session_label_expr(symbols: Iterable[str], session_tz: SessionTz) -> pl.Expr:
    """Polars expression of the session label (``YYYY-MM-DD``) of each row's ``window_start``."""
    by_zone: dict[str, list[str]] = {}
    for symbol in symbols:
        by_zone.setdefault(zone_for(symbol, session_tz), []).append(symbol)
    for name in by_zone:
        tzinfo(name)

    def label(name: str) -> pl.Expr:
        local = pl.from_epoch(pl.col("window_start"), time_unit="ms").dt.convert_time_zone(name)
        return local.dt.date().cast(pl.String)

    if len(by_zone) <= 1:
        return label(next(iter(by_zone), DEFAULT_ZONE))
    branches = [pl.when(pl.col("symbol").is_in(members)).then(label(name)) for name, members in by_zone.items()]
    return pl.coalesce(branches)
