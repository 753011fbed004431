"""The daily partitioning of the batch assets: UTC calendar days of event time."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import DailyPartitionsDefinition

# The oldest data the platform holds (the shared equity sample starts 2013-10-07).
FIRST_DAY = "2013-10-01"

daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")


def day_bounds_ms(day: str) -> tuple[int, int]:
    """``"2013-10-08"`` -> ``[start, end)`` of that UTC day in epoch milliseconds."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    start_ms = int(start.timestamp() * 1000)
    return start_ms, start_ms + 86_400_000
