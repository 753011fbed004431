"""``streaming_watermark_sensor``: the live path's progress, reported to Dagster as observations.

Every ``minimum_interval_seconds`` (15 s) the sensor reads ``bar_watermarks`` in PostgreSQL
(:func:`tickforge.platform.io.postgres.watermark_reports`): per timeframe, the golden watermark
(the minimum over source partitions) and the time of the latest report (when the minimum
reached its value, at the latest). For each timeframe whose watermark advanced past the one in the cursor it reports an
:class:`~dagster.AssetObservation` of the golden table (``postgres/bars_<tf>``) and of the bar
topic feeding it (``kafka/bars_<tf>``) with the watermark (epoch ms and ISO time), its lag
behind the wall clock, and ``dagster/last_updated_timestamp`` = when the workers stored it. The
cursor is the last reported watermark per timeframe (JSON), so an idle stream reports nothing.

The freshness checks on those assets (:func:`streaming_freshness_checks`, Dagster's
last-update checks, run by ``streaming_freshness_checks_sensor``) read that timestamp: they pass
while the watermark keeps advancing and fail once it has not advanced for ``max_lag``. The lag
behind the wall clock is reported, not checked: a replay of an old trading day is years behind
the wall clock and still fresh.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetChecksDefinition,
    AssetObservation,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
    sensor,
)

from tickforge.defs.lib.keys import bar_topic_key, golden_bars_key
from tickforge.defs.postgres.resources import PostgresResource
from tickforge.platform.bars.timeframes import bar_timeframes
from tickforge.platform.io.postgres import watermark_reports

DEFAULT_MAX_LAG_S = 900.0
MAX_LAG_ENV = "TICKFORGE_STREAMING_FRESHNESS_MAX_LAG_S"
LAST_UPDATED = "dagster/last_updated_timestamp"


def max_lag_from_env() -> timedelta:
    """The freshness bound: ``TICKFORGE_STREAMING_FRESHNESS_MAX_LAG_S`` seconds (default 15 min)."""
    return timedelta(seconds=float(os.environ.get(MAX_LAG_ENV, DEFAULT_MAX_LAG_S)))


def read_watermarks(postgres: PostgresResource, timeframes: Sequence[str]) -> dict[str, tuple[int, float]]:
    """:func:`~tickforge.platform.io.postgres.watermark_reports` through the resource."""
    with postgres.connect() as conn:
        return watermark_reports(conn, postgres.schema_name, timeframes)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def watermark_observations(
    marks: dict[str, tuple[int, float]], cursor: dict[str, int], now_s: float | None = None
) -> tuple[list[AssetObservation], dict[str, int]]:
    """Observations for each timeframe whose watermark passed the cursor's, and the new cursor."""
    now_s = time.time() if now_s is None else now_s
    events: list[AssetObservation] = []
    new_cursor = dict(cursor)
    for tf, (mark, stored_at) in sorted(marks.items()):
        if tf in cursor and mark <= cursor[tf]:
            continue
        # stored_at is when the partition holding the minimum last wrote: a lower bound of when
        # the golden watermark reached ``mark`` (a lagging partition that moved on may have lifted
        # it just now). Past a previous observation, it advanced since that evaluation: now is
        # the better stamp, at most one sensor interval late.
        reached_at = max(stored_at, now_s) if tf in cursor else stored_at
        metadata: dict[str, Any] = {
            "timeframe": tf,
            "watermark_ms": mark,
            "watermark": _iso(mark),
            "lag_vs_wall_clock_s": round(now_s - mark / 1000, 3),
            "previous_watermark_ms": cursor.get(tf, -1),
            "stored_at": MetadataValue.timestamp(stored_at),
            LAST_UPDATED: MetadataValue.timestamp(reached_at),
        }
        for key in (golden_bars_key(tf), bar_topic_key(tf)):
            events.append(AssetObservation(asset_key=key, metadata=metadata))
        new_cursor[tf] = mark
    return events, new_cursor


def build_streaming_watermark_sensor(timeframes: Sequence[str], interval_s: int = 15):
    frames = bar_timeframes(timeframes)

    @sensor(
        name="streaming_watermark_sensor",
        minimum_interval_seconds=interval_s,
        description="Observes the golden bar tables and bar topics with the watermark the workers "
        "reached (bar_watermarks), when it advanced.",
    )
    def streaming_watermark_sensor(
        context: SensorEvaluationContext, postgres: PostgresResource
    ) -> SensorResult | SkipReason:
        cursor = {tf: int(v) for tf, v in json.loads(context.cursor).items()} if context.cursor else {}
        marks = read_watermarks(postgres, frames)
        if not marks:
            return SkipReason("no golden watermark recorded yet")
        events, new_cursor = watermark_observations(marks, cursor)
        if not events:
            return SkipReason(f"no watermark advanced: {cursor}")
        return SensorResult(asset_events=events, cursor=json.dumps(new_cursor, sort_keys=True))

    return streaming_watermark_sensor


def streaming_freshness_checks(
    timeframes: Sequence[str], max_lag: timedelta | None = None
) -> Sequence[AssetChecksDefinition]:
    """Last-update freshness checks on each golden bar table and bar topic."""
    keys = [k for tf in bar_timeframes(timeframes) for k in (golden_bars_key(tf), bar_topic_key(tf))]
    # Superseded by FreshnessPolicy in 1.13, but that one is evaluated by the freshness daemon
    # only; checks are visible in the asset graph, testable and run by a sensor.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_last_update_freshness_checks(assets=keys, lower_bound_delta=max_lag or max_lag_from_env())


def build_streaming_freshness_sensor(checks: Sequence[AssetChecksDefinition]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sensor_for_freshness_checks(
            freshness_checks=checks, minimum_interval_seconds=60, name="streaming_freshness_checks_sensor"
        )
