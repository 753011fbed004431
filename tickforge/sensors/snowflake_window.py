"""``snowflake_window_sensor``: every 5 minutes, load each 5-minute window the golden bars have closed.

The golden watermark (:func:`tickforge.platform.io.postgres.golden_watermark`, the minimum over
partitions, for both fact timeframes 1 m and 5 m) says up to where the golden bars are complete.
Each whole window ``[s, s + 5 min)`` with ``s + 5 min <= watermark`` after the cursor gets one run
of ``snowflake_window_facts`` (run key ``window-<s>``: a window is requested once). The cursor is
the end of the last window requested; without one the sensor starts at the latest closed window
(older days are the nightly load's business). At most ``MAX_WINDOWS`` per evaluation.
"""

from __future__ import annotations

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from tickforge.assets.warehouse import FACT_TABLES
from tickforge.jobs.intraday import snowflake_window_job
from tickforge.platform.io.postgres import golden_watermark
from tickforge.resources import PostgresResource

WINDOW_MS = 300_000
MAX_WINDOWS = 24


def golden_facts_watermark(postgres: PostgresResource) -> int | None:
    with postgres.connect() as conn:
        marks = [golden_watermark(conn, postgres.schema_name, tf) for tf in FACT_TABLES]
    return None if any(m is None for m in marks) else min(marks)  # type: ignore[type-var]


def window_requests(watermark: int, cursor: int | None) -> tuple[list[int], int | None]:
    """Window starts to load and the new cursor (end of the last window requested)."""
    closed_end = watermark // WINDOW_MS * WINDOW_MS
    start = cursor if cursor is not None else closed_end - WINDOW_MS
    starts = list(range(start, closed_end, WINDOW_MS))[:MAX_WINDOWS]
    return starts, (starts[-1] + WINDOW_MS if starts else cursor)


@sensor(
    name="snowflake_window_sensor",
    job=snowflake_window_job,
    minimum_interval_seconds=300,
    description="Every 5 minutes: a facts load per 5-minute window the golden watermark has passed.",
)
def snowflake_window_sensor(context: SensorEvaluationContext, postgres: PostgresResource) -> SensorResult | SkipReason:
    watermark = golden_facts_watermark(postgres)
    if watermark is None:
        return SkipReason("no golden watermark yet")
    starts, cursor = window_requests(watermark, int(context.cursor) if context.cursor else None)
    if not starts:
        return SkipReason(f"no new closed window (watermark {watermark})")
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"window-{s}",
                run_config={"ops": {"snowflake_window_facts": {"config": {"window_start_ms": s, "window_ms": WINDOW_MS}}}},
                tags={"tickforge/window_start_ms": str(s)},
            )
            for s in starts
        ],
        cursor=str(cursor),
    )
