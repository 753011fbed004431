"""Timeframe names and their lengths in milliseconds."""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^(\d+)(ms|s|m|h|d)$")

BIN_TIMEFRAME = "10ms"
DEFAULT_TIMEFRAMES = ("1s", "1m", "3m", "5m", "15m")


def timeframe_ms(name: str) -> int:
    """``"10ms"`` -> 10, ``"1s"`` -> 1000, ``"15m"`` -> 900000."""
    match = _PATTERN.match(name.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"unknown timeframe {name!r}: use e.g. 10ms, 1s, 1m, 3m, 5m, 15m, 1h")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_timeframes(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """A comma list (or sequence) of timeframes, sorted by length, duplicates removed."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    cleaned = {n.strip(): timeframe_ms(n) for n in names if n.strip()}
    return sorted(cleaned, key=cleaned.__getitem__)


def rollup_parent(timeframe: str, available: list[str]) -> str:
    """The longest available timeframe that tiles ``timeframe`` exactly (its rollup source)."""
    length = timeframe_ms(timeframe)
    parents = [a for a in available if timeframe_ms(a) < length and length % timeframe_ms(a) == 0]
    if not parents:
        raise ValueError(f"no timeframe in {available} tiles {timeframe}")
    return max(parents, key=timeframe_ms)
