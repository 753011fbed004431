"""The sensors on the real local stack.

* ``snowflake_window_sensor``: golden 1 m / 5 m bars of real BAC trades with a golden watermark
  at 14:12 UTC: the sensor loads the window that just closed itself (check passing), requests a
  catch-up of the closed 5-minute windows after an old cursor as runs, and a run loads its window
  into the Snowflake facts (its check passes).
* ``dead_letter_sensor``: the first evaluation only places the cursor; late and bad ticks on the
  dead-letter topic above the configured rate record one alert and fail the rate check; a quiet
  interval records none and passes it; run by hand, the check measures the last minutes.
"""

from __future__ import annotations

import json
import time
import uuid

import polars as pl
import pytest

pytestmark = pytest.mark.integration

TRADES_FILE = "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
T1330 = 1381239000000  # 2013-10-08 13:30 UTC
MIN = 60_000


def _golden(s, samples) -> dict[str, int]:
    import psycopg

    from tickforge.platform.bars.offline import build_bars
    from tickforge.platform.contracts import Bar
    from tickforge.platform.io.files import TickFile, read_trades
    from tickforge.platform.io.postgres import apply_migrations, record_watermark, upsert_bars

    ticks = read_trades(samples / TRADES_FILE)
    data = ticks.data.filter(
        (pl.col("symbol") == "BAC") & (pl.col("ts_ms") >= T1330) & (pl.col("ts_ms") < T1330 + 60 * MIN)
    )
    trades = TickFile("trades", ticks.source, data, ticks.dead_letters.clear())
    dsn = s.postgres.dsn.get_secret_value()
    apply_migrations(dsn, s.postgres.schema_name, ["1m", "5m"])
    built = build_bars(trades, ["1m", "5m"], lateness_ms=500, dedup_horizon_ms=60_000)
    counts = {}
    with psycopg.connect(dsn) as conn:
        for tf, frame in built.bars.items():
            bars = [
                Bar(timeframe=tf, first_ts=r["window_start"], last_ts=r["window_end"] - 1, **r)
                for r in frame.to_dicts()
            ]
            counts[tf] = upsert_bars(conn, s.postgres.schema_name, tf, bars)
            record_watermark(conn, s.postgres.schema_name, tf, 0, T1330 + 42 * MIN)  # 14:12
        conn.commit()
    return counts


def test_snowflake_window_sensor_launches_closed_windows(settings, monkeypatch, samples):
    import snowflake.connector
    from dagster import DagsterInstance, build_sensor_context

    from tickforge.definitions import build_definitions
    from tickforge.defs.resources import resources_for
    from tickforge.defs.snowflake.window_sensor import snowflake_window_sensor
    from tickforge.platform.settings import Settings

    monkeypatch.setenv("TICKFORGE_SNOWFLAKE__DATABASE", f"TF_{uuid.uuid4().hex[:8].upper()}")
    s = Settings()
    golden = _golden(s, samples)
    assert golden["1m"] >= 55
    resources = resources_for(s, env_secrets=False)
    postgres = resources["postgres"]
    context = {"postgres": postgres, "snowflake": resources["snowflake"]}

    # The window just closed (14:05-14:10) is loaded by the sensor itself, with its check.
    fresh = snowflake_window_sensor(build_sensor_context(resources=context))
    assert not fresh.run_requests
    materialized = [e for e in fresh.asset_events if e.__class__.__name__ == "AssetMaterialization"]
    checks = [e for e in fresh.asset_events if e.__class__.__name__ == "AssetCheckEvaluation"]
    assert [m.metadata["window_start_ms"].value for m in materialized] == [T1330 + 35 * MIN]
    assert [c.passed for c in checks] == [True]
    assert json.loads(fresh.cursor)["end"] == T1330 + 40 * MIN

    # Behind by four windows: a catch-up, launched as runs.
    behind = snowflake_window_sensor(build_sensor_context(cursor=str(T1330 + 20 * MIN), resources=context))
    starts = [r.run_config["ops"]["snowflake_window_facts"]["config"]["window_start_ms"] for r in behind.run_requests]
    assert starts == [T1330 + m * MIN for m in (20, 25, 30, 35)]
    assert not behind.asset_events
    caught_up = snowflake_window_sensor(build_sensor_context(cursor=behind.cursor, resources=context))
    assert not caught_up.run_requests and "no new or corrected window" in str(caught_up.skip_reason)

    job = build_definitions(s).resolve_job_def("snowflake_window_facts_job")
    instance = DagsterInstance.ephemeral()
    for request in behind.run_requests[:2]:
        result = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
    with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
        cur = conn.cursor()
        rows_1m = cur.execute(
            "SELECT COUNT(*), MIN(WINDOW_START), MAX(WINDOW_START) FROM CORE.FACT_TICKS_60S"
        ).fetchone()
        rows_5m = cur.execute("SELECT COUNT(*) FROM CORE.FACT_TICKS_300S").fetchone()[0]
    assert rows_1m == (15, T1330 + 20 * MIN, T1330 + 39 * MIN)  # 20-30 by the runs, 35-40 inline
    assert rows_5m == 3


def test_dead_letter_sensor_alerts_over_rate(settings):
    from dagster import build_sensor_context

    from tickforge.defs.postgres.alerts import list_alerts
    from tickforge.defs.resources import resources_for
    from tickforge.defs.streaming.dead_letters import build_dead_letter_rate_check, build_dead_letter_sensor, evaluate
    from tickforge.platform.contracts import JSON_ENCODER, DeadLetter
    from tickforge.platform.io.kafka import make_producer, topic_name
    from tickforge.platform.topics import DEAD_LETTER

    resources = resources_for(settings, env_secrets=False)
    postgres, kafka = resources["postgres"], resources["kafka"]
    producer = make_producer(settings)
    topic = topic_name(settings, DEAD_LETTER)

    def send(reason: str, n: int) -> None:
        for i in range(n):
            letter = DeadLetter(reason=reason, source="test", payload="{}", symbol="BAC", ts_ms=T1330 + i)
            producer.produce(topic, JSON_ENCODER.encode(letter), "BAC")
        assert producer.flush(10) == 0

    send("late", 7)  # history before the sensor starts: never an alert
    sensor = build_dead_letter_sensor(max_per_minute=10)
    first = sensor(build_sensor_context(resources={"postgres": postgres, "kafka": kafka}))
    state = json.loads(first.cursor)
    assert sum(state["offsets"].values()) == 7
    assert first.asset_events[0].metadata["first_evaluation"].value is True

    send("late", 25)
    send("bad_price", 5)
    send("duplicate", 40)  # not late or bad: does not count towards the rate
    summary, cursor = evaluate(kafka, postgres, first.cursor, 10, now_ms=state["at_ms"] + 2 * MIN)
    assert summary["by_reason"] == {"late": 25, "bad_price": 5, "duplicate": 40}
    assert summary["late_or_bad"] == 30 and summary["per_minute"] == 15.0 and summary["alert"]
    alerts = list_alerts(postgres, "dead_letter_sensor")
    assert len(alerts) == 1 and alerts[0]["details"]["late_or_bad"] == 30

    quiet = sensor(build_sensor_context(cursor=cursor, resources={"postgres": postgres, "kafka": kafka}))
    meta = quiet.asset_events[0].metadata
    assert meta["dead_letters"].value == 0 and meta["alert"].value is False
    assert len(list_alerts(postgres, "dead_letter_sensor")) == 1
    assert [(e.check_name, e.passed) for e in quiet.asset_events[1:]] == [("dead_letter_rate_within_limit", True)]

    # Over the rate through the sensor itself: the check on the dead-letter topic fails.
    send("late", 30)
    minute_ago = json.dumps({**json.loads(quiet.cursor), "at_ms": int(time.time() * 1000) - MIN})
    loud = sensor(build_sensor_context(cursor=minute_ago, resources={"postgres": postgres, "kafka": kafka}))
    assert [(e.check_name, e.passed) for e in loud.asset_events[1:]] == [("dead_letter_rate_within_limit", False)]
    assert len(list_alerts(postgres, "dead_letter_sensor")) == 2

    # Run by hand, the check measures the last minutes by Kafka time: 67 late or bad in 5 min.
    assert not build_dead_letter_rate_check(max_per_minute=10)(kafka=kafka).passed
    assert build_dead_letter_rate_check(max_per_minute=100)(kafka=kafka).passed
