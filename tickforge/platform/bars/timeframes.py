"""Timeframes: their names, lengths in milliseconds, and which are bins and which are bars.

The 10 ms timeframe is the bins the bar worker builds from ticks and every other timeframe rolls
up from; only the others are bars with a topic and a golden table (:func:`bar_timeframes`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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


_BIN_MS = timeframe_ms(BIN_TIMEFRAME)


@dataclass(frozen=True, order=True)
class Timeframe:
    """A timeframe, ordered by length: ``Timeframe.parse("5m").ms == 300_000``."""

    ms: int
    name: str = field(compare=False)

    def __post_init__(self) -> None:
        if timeframe_ms(self.name) != self.ms:
            raise ValueError(f"timeframe {self.name!r} is not {self.ms} ms long")

    @classmethod
    def parse(cls, name: str) -> Timeframe:
        return cls(timeframe_ms(name), name.strip())

    @property
    def is_bin(self) -> bool:
        """The 10 ms bins: internal to the bar worker, no topic of bars, no golden table."""
        return self.ms == _BIN_MS

    def __str__(self) -> str:
        return self.name


def bar_timeframes(names: Iterable[str]) -> list[str]:
    """The timeframes among ``names`` that are bars (every one but the bins), in their order."""
    return [name for name in names if not Timeframe.parse(name).is_bin]


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
