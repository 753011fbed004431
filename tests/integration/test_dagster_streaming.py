"""The streaming side observed in Dagster, on the real local stack (PostgreSQL).

The workers record each timeframe's watermark per source partition in ``bar_watermarks``
(:func:`record_watermark`, the call the bar store makes in its transaction). The
``streaming_watermark_sensor`` reports observations of the golden tables and bar topics when the
golden watermark (min over partitions) advanced; Dagster's last-update freshness checks on those
assets pass while it advances and fail once it is older than the configured lag.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

pytestmark = pytest.mark.integration

T1330 = 1381239000000  # 2013-10-08 13:30 UTC
MIN = 60_000


def _record(s, timeframe: str, partition: int, watermark_ms: int) -> None:
    import psycopg

    from tickforge.platform.io.postgres import record_watermark

    with psycopg.connect(s.postgres.dsn.get_secret_value()) as conn:
        record_watermark(conn, s.postgres.schema_name, timeframe, partition, watermark_ms)
        conn.commit()


def test_watermark_observations_and_freshness_checks(settings):
    from dagster import AssetSelection, DagsterInstance, Definitions, build_sensor_context, define_asset_job

    from tickforge.definitions import build_definitions
    from tickforge.defs.resources import resources_for
    from tickforge.defs.streaming.assets import streaming_specs
    from tickforge.defs.streaming.watermarks import build_streaming_watermark_sensor, streaming_freshness_checks
    from tickforge.platform.io.postgres import apply_migrations

    s = settings
    schema = s.postgres.schema_name
    postgres = resources_for(s, env_secrets=False)["postgres"]
    timeframes = ["1m", "5m"]
    sensor = build_streaming_watermark_sensor(s.streaming.timeframes)
    instance = DagsterInstance.ephemeral()

    # The code location's checks: one per golden table and bar topic, 15 minutes by default.
    shipped = build_definitions(s).resolve_asset_graph().asset_check_keys
    fresh_keys = {k.asset_key.to_user_string() for k in shipped if k.name == "freshness_check"}
    assert fresh_keys == {f"{p}/bars_{tf}" for tf in ("1s", "1m", "3m", "5m", "15m") for p in ("postgres", "kafka")}

    checks = streaming_freshness_checks(timeframes, max_lag=timedelta(seconds=4))
    job = Definitions(
        assets=streaming_specs(timeframes, s.kafka.topic_prefix, schema),
        asset_checks=checks,
        jobs=[define_asset_job("freshness", selection=AssetSelection.checks(*checks))],
    ).resolve_job_def("freshness")

    def evaluate(cursor):
        result = sensor(build_sensor_context(cursor=cursor, instance=instance, resources={"postgres": postgres}))
        for event in getattr(result, "asset_events", None) or []:
            instance.report_runless_asset_event(event)
        return result

    def freshness() -> dict[str, bool]:
        run = job.execute_in_process(instance=instance)
        return {e.asset_key.to_user_string(): e.passed for e in run.get_asset_check_evaluations()}

    apply_migrations(s.postgres.dsn.get_secret_value(), schema, s.streaming.timeframes)
    assert "no golden watermark" in str(evaluate(None).skip_message)
    assert freshness() == {f"{p}/bars_{tf}": False for tf in timeframes for p in ("postgres", "kafka")}

    # A replay's progress: two partitions; the golden watermark is the lagging one's.
    for tf in timeframes:
        _record(s, tf, 0, T1330 + 10 * MIN)
        _record(s, tf, 1, T1330 + 5 * MIN)
    first = evaluate(None)
    assert json.loads(first.cursor) == {"1m": T1330 + 5 * MIN, "5m": T1330 + 5 * MIN}
    observed = {e.asset_key.to_user_string(): e.metadata for e in first.asset_events}
    assert set(observed) == {"postgres/bars_1m", "kafka/bars_1m", "postgres/bars_5m", "kafka/bars_5m"}
    meta = observed["postgres/bars_5m"]
    assert meta["watermark_ms"].value == T1330 + 5 * MIN
    assert meta["watermark"].value == "2013-10-08T13:35:00.000+00:00"
    assert meta["lag_vs_wall_clock_s"].value > 3.5e8  # an old day replayed: years behind the clock
    assert abs(meta["dagster/last_updated_timestamp"].value - time.time()) < 10
    assert all(freshness().values())

    # Nothing advanced (partition 0 moving alone leaves the minimum): no observation.
    _record(s, "1m", 0, T1330 + 11 * MIN)
    idle = evaluate(first.cursor)
    assert "no watermark advanced" in str(idle.skip_message)

    # Stale: the watermark has not advanced for longer than the lag.
    time.sleep(4.5)
    assert not any(freshness().values())

    # The lagging partition moves on: only 1m advanced, and its assets are fresh again.
    _record(s, "1m", 1, T1330 + 12 * MIN)
    moved = evaluate(first.cursor)
    assert json.loads(moved.cursor) == {"1m": T1330 + 11 * MIN, "5m": T1330 + 5 * MIN}
    assert {e.asset_key.to_user_string() for e in moved.asset_events} == {"postgres/bars_1m", "kafka/bars_1m"}
    assert freshness() == {
        "postgres/bars_1m": True,
        "kafka/bars_1m": True,
        "postgres/bars_5m": False,
        "kafka/bars_5m": False,
    }
