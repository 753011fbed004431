"""Walk-forward windows on the New York calendar: in-sample ``train``, then out-of-sample ``test``, rolled by ``test``."""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta

from tickforge.research.bars import NEW_YORK, ny_midnight_ms
from tickforge.research.engine import Window

_SPAN = re.compile(r"^\s*(\d+)\s*(d|w|mo|y)\s*$")


def parse_span(text: str) -> tuple[int, str]:
    """``"3y"``, ``"6mo"``, ``"2w"``, ``"90d"`` -> (count, unit)."""
    match = _SPAN.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"span {text!r}: use a positive count of d, w, mo or y (e.g. 3y, 6mo, 90d)")
    return int(match.group(1)), match.group(2)


def shift(day: date, span: tuple[int, str], times: int = 1) -> date:
    count, unit = span[0] * times, span[1]
    if unit == "d":
        return day + timedelta(days=count)
    if unit == "w":
        return day + timedelta(weeks=count)
    months = count * (12 if unit == "y" else 1)
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def ny_day(ms: int) -> date:
    return datetime.fromtimestamp(ms // 1000, NEW_YORK).date()


def walk_forward_windows(first_ms: int, last_ms: int, train: str, test: str) -> list[Window]:
    """Pairs (in, out) with the same index k: in = [s_k, s_k + train), out = [s_k + train, s_k + train + test).

    ``s_0`` is the New York day of ``first_ms`` and ``s_{k+1} = s_k + test``; windows stop once an
    out-of-sample period would start after ``last_ms`` (the last one may be cut by the data's end).
    """
    train_span, test_span = parse_span(train), parse_span(test)
    first, last = ny_day(first_ms), ny_day(last_ms)
    windows: list[Window] = []
    k = 0
    while True:
        start = shift(first, test_span, k)
        split = shift(start, train_span)
        if split > last:
            return windows
        end = shift(split, test_span)
        windows.append(Window(k, "in", ny_midnight_ms(start), ny_midnight_ms(split)))
        windows.append(Window(k, "out", ny_midnight_ms(split), ny_midnight_ms(end)))
        k += 1


def trailing_window(day: date, train: str) -> Window:
    """The in-sample period that ends just before ``day``: ``[day - train, day)``."""
    span = parse_span(train)
    return Window(0, "in", ny_midnight_ms(shift(day, span, -1)), ny_midnight_ms(day))
