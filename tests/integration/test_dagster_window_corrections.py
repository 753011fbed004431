"""``snowflake_window_sensor`` on the real local stack: runs are idempotent, and a late correction
of a golden bar in a closed window re-merges that window into the Snowflake facts (once)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.test_dagster_sensors import MIN, T1330, _golden

pytestmark = pytest.mark.integration


def test_corrected_golden_bar_remerges_its_window(settings, monkeypatch, samples):
    import psycopg
    import snowflake.connector
    from dagster import DagsterInstance, RunRequest, build_sensor_context

    from tickforge.definitions import build_definitions
    from tickforge.defs.resources import resources_for
    from tickforge.defs.snowflake.window_sensor import INTERVAL_S, snowflake_window_sensor
    from tickforge.platform.contracts import Bar
    from tickforge.platform.io.postgres import upsert_bars
    from tickforge.platform.settings import Settings

    assert INTERVAL_S <= 3  # the facts are due within 5 s of a window closing
    monkeypatch.setenv("TICKFORGE_SNOWFLAKE__DATABASE", f"TF_{uuid.uuid4().hex[:8].upper()}")
    s = Settings()
    _golden(s, samples)  # golden watermark 14:12
    resources = resources_for(s, env_secrets=False)
    postgres = resources["postgres"]
    job = build_definitions(s).resolve_job_def("snowflake_window_facts_job")
    instance = DagsterInstance.ephemeral()

    def evaluate(cursor):
        return snowflake_window_sensor(
            build_sensor_context(cursor=cursor, resources={"postgres": postgres, "snowflake": resources["snowflake"]})
        )

    def launch(request):
        result = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
        assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
        return result.asset_materializations_for_node("snowflake_window_facts")[0].metadata

    def fact(window_start):
        with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
            return (
                conn.cursor()
                .execute(f"SELECT HIGH, CLOSE, LOADED_AT FROM CORE.FACT_TICKS_60S WHERE WINDOW_START = {window_start}")
                .fetchone()
            )

    w = T1330 + 35 * MIN  # 14:05-14:10, the latest closed window
    first = evaluate(None)  # the sensor loads the window that just closed itself
    assert not first.run_requests
    loaded = next(e for e in first.asset_events if e.__class__.__name__ == "AssetMaterialization").metadata
    assert loaded["1m_inserted"].value == 5 and loaded["5m_inserted"].value == 1
    before = fact(w + 2 * MIN)
    rerun = RunRequest(
        run_config={"ops": {"snowflake_window_facts": {"config": {"window_start_ms": w, "window_ms": 5 * MIN}}}},
        tags={"tickforge/window_start_ms": str(w)},
    )
    assert launch(rerun)["changed"].value == 0  # a run of the same window changes nothing
    assert fact(w + 2 * MIN) == before

    quiet = evaluate(first.cursor)
    assert not quiet.run_requests and json.loads(quiet.cursor)["end"] == w + 5 * MIN

    # A late correction of the 14:07 bar (replace-whole upsert, as the bar store writes it).
    dsn, schema = s.postgres.dsn.get_secret_value(), s.postgres.schema_name
    with psycopg.connect(dsn) as conn:
        cols = "symbol window_start window_end open high low close volume notional vwap trade_count first_ts last_ts".split()
        row = conn.execute(
            f"SELECT {', '.join(cols)} FROM {schema}.bars_1m WHERE window_start = %s", (w + 2 * MIN,)
        ).fetchone()
        bar = dict(zip(cols, row, strict=True)) | {"high": row[4] + 0.05, "close": row[4] + 0.05}
        upsert_bars(conn, schema, "1m", [Bar(timeframe="1m", **bar)])
        conn.commit()
    corrected = evaluate(quiet.cursor)
    (request,) = corrected.run_requests
    assert request.run_key.startswith(f"window-{w}-") and request.tags["tickforge/reason"] == "correction"
    assert launch(request)["1m_updated"].value == 1
    assert fact(w + 2 * MIN)[:2] == pytest.approx((row[4] + 0.05, row[4] + 0.05))

    # Seen once: the next evaluation requests nothing; the same correction has the same run key.
    after = evaluate(corrected.cursor)
    assert not after.run_requests
    assert [r.run_key for r in evaluate(quiet.cursor).run_requests] == [request.run_key]
