"""``snowflake_window_sensor``: every few seconds, load each 5-minute window the golden bars have
closed, and re-load a closed window whose golden bars were corrected.

The golden watermark (:func:`tickforge.platform.io.postgres.golden_watermark`, the minimum over
partitions, for both fact timeframes 1 m and 5 m) says up to where the golden bars are complete.
Each whole window ``[s, s + 5 min)`` with ``s + 5 min <= watermark`` after the cursor gets one run
of ``snowflake_window_facts`` (run key ``window-<s>``: a window is requested once). Without a
cursor the sensor starts at the latest closed window (older days are the nightly load's
business). At most ``MAX_WINDOWS`` new windows per evaluation.

Late corrections: for the windows of the last ``CORRECTION_HORIZON_MS`` the cursor keeps a
signature of their golden 1 m / 5 m rows (count, latest ``stored_at``, sum of the rows' ``xmin``:
every committed upsert of a row changes it, even one whose transaction started before a row
already seen). A window whose signature changed is requested again (run key
``window-<s>-<signature digest>``, so one correction is loaded once); the load is an idempotent
upsert of the whole window, so the facts end equal to the corrected golden bars.

Fresh windows load in the sensor itself: a launched run starts a new process that imports the
code location (dagster, dagster-snowflake, dagster-dbt: 7 s or more on two cores), which alone
breaks "facts visible within 5 s of the window closing". The sensor runs in the warm code server,
so it loads up to ``INLINE_WINDOWS`` newly closed windows directly (the same
:func:`~tickforge.defs.snowflake.warehouse.load_fact_window` as the job) and records the materialization
of ``snowflake_window_facts`` and its check as asset events. A catch-up of more windows, a
correction, or an inline load that fails goes through runs of the job as before.

Dagster's sensor daemon evaluates a sensor at most every 5 seconds (its loop's minimum), so a
window closing just after an evaluation would wait that long. When nothing is due, an evaluation
therefore watches the golden watermark for up to ``WATCH_S`` (one cheap query every
``WATCH_POLL_S``) and loads a window the moment it closes.

Cursor: JSON ``{"end": <end of the last window requested>, "seen": {"<s>": "<signature>"}}``
(a bare integer, the previous format, is read as ``end``).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster_snowflake import SnowflakeResource

from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.snowflake.jobs import snowflake_window_job
from tickforge.defs.snowflake.warehouse import FACT_TABLES, WINDOW_CHECK, facts_match_golden, load_fact_window
from tickforge.platform.io.postgres import golden_watermark
from tickforge.platform.io.postgres import window_signatures as golden_window_signatures

WINDOW_MS = 300_000
MAX_WINDOWS = 24
INLINE_WINDOWS = 2  # more newly closed windows at once is a catch-up: runs, not the sensor
CORRECTION_HORIZON_MS = 6 * 3_600_000
INTERVAL_S = 1
WATCH_S = 4.0
INLINE_BUDGET_S = 20.0  # Dagster gives a sensor evaluation 60 s
WATCH_POLL_S = 0.1
WINDOW_FACTS = AssetKey("snowflake_window_facts")


def _facts_watermark(conn, schema: str) -> int | None:
    """Up to where the golden bars of every fact timeframe are complete (None: not known)."""
    marks = [golden_watermark(conn, schema, tf) for tf in FACT_TABLES]
    return None if any(m is None for m in marks) else min(marks)  # type: ignore[type-var]


def golden_facts_watermark(postgres: PostgresResource) -> int | None:
    with postgres.connect() as conn:
        return _facts_watermark(conn, postgres.schema_name)


def watch_for_close(postgres: PostgresResource, end: int, budget_s: float = WATCH_S) -> bool:
    """Poll the golden watermark until a window after ``end`` closes (True) or time is up."""
    deadline = time.monotonic() + budget_s
    with postgres.connect() as conn:
        while True:
            watermark = _facts_watermark(conn, postgres.schema_name)
            conn.commit()  # a fresh snapshot for the next poll
            if watermark is not None and watermark // WINDOW_MS * WINDOW_MS > end:
                return True
            if time.monotonic() + WATCH_POLL_S > deadline:
                return False
            time.sleep(WATCH_POLL_S)


def window_requests(watermark: int, cursor: int | None) -> tuple[list[int], int | None]:
    """Window starts to load and the new cursor (end of the last window requested)."""
    closed_end = watermark // WINDOW_MS * WINDOW_MS
    start = cursor if cursor is not None else closed_end - WINDOW_MS
    starts = list(range(start, closed_end, WINDOW_MS))[:MAX_WINDOWS]
    return starts, (starts[-1] + WINDOW_MS if starts else cursor)


def window_signatures(postgres: PostgresResource, start_ms: int, end_ms: int) -> dict[int, str]:
    """``{window start: signature}`` of the golden 1 m / 5 m rows per 5-minute window in range."""
    with postgres.connect() as conn:
        return golden_window_signatures(conn, postgres.schema_name, list(FACT_TABLES), start_ms, end_ms, WINDOW_MS)


def parse_cursor(cursor: str | None) -> tuple[int | None, dict[int, str]]:
    if not cursor:
        return None, {}
    state = json.loads(cursor)
    if isinstance(state, int):
        return state, {}
    return state["end"], {int(k): v for k, v in state["seen"].items()}


def _request(start: int, run_key: str, reason: str) -> RunRequest:
    return RunRequest(
        run_key=run_key,
        run_config={"ops": {"snowflake_window_facts": {"config": {"window_start_ms": start, "window_ms": WINDOW_MS}}}},
        tags={"tickforge/window_start_ms": str(start), "tickforge/reason": reason},
    )


def evaluate_windows(postgres: PostgresResource, cursor: str | None) -> tuple[list[RunRequest], str | None, str]:
    """Run requests (new windows, then corrected ones), the new cursor and a summary."""
    watermark = golden_facts_watermark(postgres)
    if watermark is None:
        return [], cursor, "no golden watermark yet"
    end, seen = parse_cursor(cursor)
    starts, new_end = window_requests(watermark, end)
    if new_end is None:
        return [], cursor, f"no closed window yet (watermark {watermark})"
    horizon = new_end - CORRECTION_HORIZON_MS
    signatures = window_signatures(postgres, max(horizon, min([*seen, *starts, new_end])), new_end)
    requests = [_request(s, f"window-{s}", "closed") for s in starts]
    corrected = []
    for s, sig in sorted(signatures.items()):
        if s in starts or s < horizon:
            continue
        if s in seen and seen[s] != sig:
            digest = hashlib.sha256(sig.encode()).hexdigest()[:12]
            requests.append(_request(s, f"window-{s}-{digest}", "correction"))
            corrected.append(s)
    new_seen = {s: sig for s, sig in signatures.items() if s >= horizon and (s in seen or s in starts)}
    state = json.dumps({"end": new_end, "seen": {str(s): v for s, v in sorted(new_seen.items())}})
    summary = f"watermark {watermark}: {len(starts)} closed window(s), {len(corrected)} corrected {corrected}"
    return requests, state, summary


def load_window_events(
    log, postgres: PostgresResource, snowflake: SnowflakeResource, start_ms: int
) -> list[AssetMaterialization | AssetCheckEvaluation]:
    """Load one window now; the materialization and check evaluation a run would have recorded."""
    end_ms = start_ms + WINDOW_MS
    tag = f"W{start_ms}_S{uuid.uuid4().hex[:8].upper()}"
    metadata = load_fact_window(log, postgres, snowflake, start_ms, end_ms, tag)
    check = facts_match_golden(postgres, snowflake, start_ms, end_ms, WINDOW_CHECK)
    return [
        AssetMaterialization(
            asset_key=WINDOW_FACTS,
            description="Loaded by snowflake_window_sensor as the window closed",
            metadata={"window_start_ms": start_ms, "window_end_ms": end_ms, **metadata},
        ),
        AssetCheckEvaluation(
            asset_key=WINDOW_FACTS,
            check_name=WINDOW_CHECK,
            passed=check.passed,
            metadata=dict(check.metadata or {}),
            severity=check.severity,
        ),
    ]


@sensor(
    name="snowflake_window_sensor",
    job=snowflake_window_job,
    minimum_interval_seconds=INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches the golden watermark and loads each 5-minute window as it closes (in "
    "the sensor, so the facts land within seconds); launches a re-load run for a closed window "
    "whose golden bars were corrected, and runs for a catch-up of many windows.",
)
def snowflake_window_sensor(
    context: SensorEvaluationContext, postgres: PostgresResource, snowflake: SnowflakeResource
) -> SensorResult | SkipReason:
    requests, cursor, summary = evaluate_windows(postgres, context.cursor)
    end = parse_cursor(cursor)[0]
    if not requests and end is not None and watch_for_close(postgres, end):
        requests, cursor, summary = evaluate_windows(postgres, cursor)
    if not requests:
        return SensorResult(skip_reason=SkipReason(f"no new or corrected window ({summary})"), cursor=cursor)
    context.log.info(summary)
    fresh = [r for r in requests if r.tags.get("tickforge/reason") == "closed"]
    runs = [r for r in requests if r not in fresh]
    events: list[AssetMaterialization | AssetCheckEvaluation] = []
    if len(fresh) > INLINE_WINDOWS:
        runs = fresh + runs
        fresh = []
    began = time.monotonic()
    for request in fresh:
        start = int(request.tags["tickforge/window_start_ms"])
        if time.monotonic() - began > INLINE_BUDGET_S:
            runs.append(request)  # a slow warehouse: the evaluation must end well inside its limit
            continue
        try:
            events += load_window_events(context.log, postgres, snowflake, start)
        except Exception:  # any failure: the run retries it visibly, with its own logs
            context.log.exception("inline load of window %s failed: launching a run", start)
            runs.append(request)
    return SensorResult(run_requests=runs, asset_events=events, cursor=cursor)
