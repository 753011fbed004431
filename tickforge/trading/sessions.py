"""Trading sessions: the US equity regular session (09:30-16:00 New York) and the rule that says,
per symbol class, which session an event falls in (:class:`SessionRule`).

Sessions themselves stay the research engine's (New York trading days of the bars); these rules
only choose which bars are traded, offline (:func:`regular_hours` over frames) and live
(:meth:`SessionRule.session` for one symbol and timestamp: a bar ending at the close is the
session's last). :func:`regular_session` is the US equity session alone, for one timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time

import polars as pl

from tickforge.platform.settings import SignalSettings, SymbolClasses
from tickforge.platform.signals.sessions import DEFAULT_ZONE, session_bounds, tzinfo, validate_session_tz
from tickforge.research.bars import NEW_YORK

OPEN, CLOSE = time(9, 30), time(16, 0)


def regular_hours(frame: pl.DataFrame, column: str = "ts_ms", rule: SessionRule | None = None) -> pl.DataFrame:
    """The rows whose ``column`` (epoch ms: a tick's ``ts_ms``, a bar's ``window_start``) falls in
    the regular hours of their symbol's class (09:30 to 16:00 New York for US equities; ``rule``,
    the default settings' if None); symbols of a class without them (crypto, FX) keep every row.
    Bars of those hours end their session at 16:00, where the book is deep enough to flatten, not
    at 20:00 in the thin after-hours book where the data ends. For bars no longer than 30 minutes,
    the bars of the regular session's trades are the regular session's bars."""
    rule = rule or default_session_rule()
    keep = pl.lit(True)
    for name, (open_at, close_at) in REGULAR_HOURS.items():
        symbols = [s for s in frame["symbol"].unique().to_list() if rule.symbol_classes.of(s) == name]
        if not symbols:
            continue
        zone = rule.class_zones.get(name, DEFAULT_ZONE)
        local = pl.from_epoch(pl.col(column), time_unit="ms").dt.convert_time_zone(zone)
        minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
        inside = (minute >= open_at.hour * 60 + open_at.minute) & (minute < close_at.hour * 60 + close_at.minute)
        keep = keep & (~pl.col("symbol").is_in(symbols) | inside)
    return frame.filter(keep)


def regular_session(ts_ms: int) -> tuple[int, int]:
    """``[open_ms, close_ms)`` of the regular session on the New York day of ``ts_ms``."""
    day = datetime.fromtimestamp(ts_ms // 1000, NEW_YORK).date()
    return (
        int(datetime.combine(day, OPEN, NEW_YORK).timestamp() * 1000),
        int(datetime.combine(day, CLOSE, NEW_YORK).timestamp() * 1000),
    )


# ------------------------------------------------------------------ the session rule per symbol class

US_EQUITY = "us_equity"
# Classes whose venue has a regular session inside its calendar day; every other class trades its
# whole calendar day (crypto, FX) in its zone.
REGULAR_HOURS: dict[str, tuple[time, time]] = {US_EQUITY: (OPEN, CLOSE)}


@dataclass(frozen=True, slots=True)
class Session:
    """A symbol's trading session: ``[open_ms, close_ms)``, and ``day_end_ms`` (the next midnight
    of its zone) until which the day's state is needed."""

    symbol: str
    day: str  # the calendar day in the symbol's zone (YYYY-MM-DD)
    open_ms: int
    close_ms: int
    day_end_ms: int

    def __post_init__(self) -> None:
        if not self.open_ms < self.close_ms <= self.day_end_ms:
            raise ValueError(f"session of {self.symbol} on {self.day}: open < close <= day end is violated")


@dataclass(frozen=True)
class SessionRule:
    """Which session a symbol's event falls in: the zone of the symbol's class (the signal
    settings' ``symbol_classes`` / ``class_session_tz``: one rule for signals and trading) and that
    class's regular hours if it has them. A symbol of no class trades the UTC calendar day."""

    symbol_classes: SymbolClasses
    class_zones: Mapping[str, str]  # class -> IANA zone

    @classmethod
    def from_settings(cls, signals: SignalSettings) -> SessionRule:
        rule = cls(signals.classes(), dict(signals.class_session_tz))
        validate_session_tz(dict(rule.class_zones))
        return rule

    def session(self, symbol: str, ts_ms: int) -> Session:
        name = self.symbol_classes.of(symbol)
        zone = self.class_zones.get(name, DEFAULT_ZONE) if name is not None else DEFAULT_ZONE
        day, start_ms, end_ms = session_bounds(ts_ms, zone)
        hours = REGULAR_HOURS.get(name) if name is not None else None
        if hours is None:
            return Session(symbol, day, start_ms, end_ms, end_ms)
        tz, local = tzinfo(zone), date.fromisoformat(day)
        open_ms, close_ms = (int(datetime.combine(local, t, tz).timestamp() * 1000) for t in hours)
        return Session(symbol, day, open_ms, close_ms, end_ms)


def default_session_rule() -> SessionRule:
    """The rule of the default settings' symbol classes."""
    return SessionRule.from_settings(SignalSettings())
