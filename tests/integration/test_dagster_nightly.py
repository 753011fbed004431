"""The nightly Dagster job on the real local stack (PostgreSQL, S3 stand-in, Snowflake stand-in).

One UTC day of real trades (BAC and AIG, 2013-10-08) is landed in S3, golden bars are built by
the streaming kernel offline and stored in PostgreSQL, and the job runs in-process for that day:
the landing is compacted, reconciliation passes, the Snowflake facts match the golden bars, the
day's dead letters on the topic (as the bar worker writes them) are counted per minute into
CORE.FACT_DEAD_LETTERS_1M, the dbt marts build (views in MART of the Snowflake stand-in) on those facts and
show the dead letters per minute and symbol, a rerun changes nothing, and a
corrupted golden bar fails the blocking reconciliation check, keeps the warehouse untouched and
is recorded as an alert by the run-failure sensor. Finally, with the default 100-day retention,
the day is archived to S3 and leaves PostgreSQL; archiving again is a no-op.
"""

from __future__ import annotations

import time
import uuid

import polars as pl
import pytest

from tests.integration.pipeline import produce_dead_letters

pytestmark = pytest.mark.integration

DAY = "2013-10-08"
SYMBOLS = ("BAC", "AIG")
TRADES_FILE = "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
DAY_MS = 1_381_190_400_000
MIN = 60_000
T1430 = DAY_MS + (14 * 60 + 30) * MIN  # 10:30 New York: both symbols trade
T0300 = DAY_MS + 3 * 60 * MIN  # before the open: no bars


@pytest.fixture()
def nightly_settings(settings, monkeypatch):
    """The stack settings with this test's own buckets and Snowflake database."""
    import boto3

    from tickforge.platform.settings import Settings

    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("TICKFORGE_S3__RAW_BUCKET", f"raw-{tag}")
    monkeypatch.setenv("TICKFORGE_S3__ARCHIVE_BUCKET", f"archive-{tag}")
    monkeypatch.setenv("TICKFORGE_SNOWFLAKE__DATABASE", f"TF_{tag.upper()}")
    s = Settings()
    client = boto3.client(
        "s3",
        endpoint_url=s.s3.endpoint_url,
        region_name=s.s3.region,
        aws_access_key_id=s.s3.access_key_id,
        aws_secret_access_key=s.s3.secret_access_key.get_secret_value(),
    )
    for bucket in (s.s3.raw_bucket, s.s3.archive_bucket):
        client.create_bucket(Bucket=bucket)
    return s


def _day_trades(samples):
    from tickforge.defs.lib.partitions import day_bounds_ms
    from tickforge.platform.io.files import TickFile, read_trades

    ticks = read_trades(samples / TRADES_FILE)
    start, end = day_bounds_ms(DAY)
    data = ticks.data.filter(pl.col("symbol").is_in(SYMBOLS) & (pl.col("ts_ms") >= start) & (pl.col("ts_ms") < end))
    return TickFile("trades", ticks.source, data, ticks.dead_letters.clear())


def _store_golden_bars(s, trades) -> dict[str, int]:
    import psycopg

    from tickforge.platform.bars.offline import build_bars
    from tickforge.platform.contracts import Bar
    from tickforge.platform.io.postgres import apply_migrations, upsert_bars

    timeframes = s.streaming.timeframes
    dsn = s.postgres.dsn.get_secret_value()
    apply_migrations(dsn, s.postgres.schema_name, timeframes)
    built = build_bars(
        trades,
        timeframes,
        lateness_ms=s.streaming.allowed_lateness_ms,
        dedup_horizon_ms=s.streaming.dedup_horizon_ms,
    )
    counts = {}
    with psycopg.connect(dsn) as conn:
        for tf, frame in built.bars.items():
            bars = [
                Bar(timeframe=tf, first_ts=row["window_start"], last_ts=row["window_end"] - 1, **row)
                for row in frame.to_dicts()
            ]
            counts[tf] = upsert_bars(conn, s.postgres.schema_name, tf, bars)
        conn.commit()
    return counts


def _fact_rows(s) -> dict[str, tuple]:
    import snowflake.connector

    with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
        cur = conn.cursor()
        out = {}
        for table in ("CORE.FACT_TICKS_60S", "CORE.FACT_TICKS_300S", "CORE.DIM_SYMBOL"):
            out[table] = cur.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        out["max_loaded_at"] = cur.execute("SELECT MAX(LOADED_AT) FROM CORE.FACT_TICKS_60S").fetchone()[0]
        out["RAW.TICKS"] = cur.execute(
            "SELECT COUNT(*), COUNT(DISTINCT SOURCE_CHECKSUM), MIN(SOURCE_OBJECT_KEY), MIN(LOADED_AT), MAX(LOADED_AT) "
            "FROM RAW.TICKS"
        ).fetchone()
        out["CORE.FACT_DEAD_LETTERS_1M"] = cur.execute(
            "SELECT MINUTE_START, REASON, SYMBOL, SOURCE, DEAD_LETTER_COUNT, LOADED_AT "
            "FROM CORE.FACT_DEAD_LETTERS_1M ORDER BY MINUTE_START, REASON, SYMBOL, SOURCE"
        ).fetchall()
        out["CORE.DIM_CALENDAR"] = cur.execute(
            "SELECT CALENDAR_DATE::VARCHAR, WEEKDAY, WEEKDAY_NAME, IS_WEEKEND, MONTH, QUARTER, YEAR "
            "FROM CORE.DIM_CALENDAR ORDER BY CALENDAR_DATE"
        ).fetchall()
        return out


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}


def _produce_day_dead_letters(s) -> None:
    """The day's dead letters as the bar worker writes them: in a transaction, with event time
    (published now, as a replay of the day would), plus one of the day before, which the day's
    load leaves out. Dead letters without event time count at their Kafka time, which for 2013
    is past the topic's retention: test_dagster_dead_letters covers them on a recent day."""
    from tickforge.platform.contracts import DeadLetter

    def letter(reason: str, source: str, symbol: str | None = None, ts_ms: int | None = None) -> DeadLetter:
        return DeadLetter(reason=reason, source=source, payload="{}", symbol=symbol, ts_ms=ts_ms)

    now_ms = int(time.time() * 1000)
    produce_dead_letters(
        s,
        [
            *((letter("late", "t.ticks", "BAC", T1430 + 1_000 * i), now_ms) for i in range(3)),
            (letter("bad_price", "t.ticks", "AIG", T1430 + 30_000), now_ms),
            *((letter("missing_symbol", "t.ticks", None, T0300 + i), now_ms) for i in range(2)),
            (letter("late", "t.ticks", "BAC", DAY_MS - 1), now_ms),
        ],
        transaction="commit",
    )


KEEP = {"ops": {"bar_archive": {"config": {"retention_days": 100_000}}}}  # archive nothing
NO_MARTS = [
    "raw_trades_daily",
    "snowflake_raw_ticks",
    "bar_reconciliation",
    "snowflake_bar_facts",
    "snowflake_dim_calendar",
    "bar_archive",
    "snowflake_dead_letter_facts",
]
RESEARCH = {
    *(
        f"backtest_sweep/{s}"
        for s in (
            "ema_cross",
            "rsi_reversion",
            "donchian_breakout",
            "macd_cross",
            "bollinger_reversion",
            "vwap_reversion",
            "orb_breakout",
        )
    ),
    "strategy_scores",
    "next_day_picks",
    "picks_scorecard",
    "snowflake_backtest_results",
    "snowflake_next_day_picks",
}
RESEARCH_CHECKS = (
    "sweep_metrics_finite",
    "scores_finite",
    "picks_use_only_prior_bars",
    "picks_within_budget",
    "pick_trades_match_equity",
    "picks_reproducible",
    "scorecard_covers_picks",
    "backtest_results_match_scores",
    "snowflake_picks_match_postgres",
)
MARTS = {
    "mart_next_day_picks",
    "mart_pipeline_minute_metrics",
    "mart_top_movers_15m",
    "mart_session_vwap",
    "mart_volatility_bands",
    "mart_price_1h",
    "mart_rolling_vwap",
}


def _keys(names):
    from dagster import AssetKey

    return [AssetKey(n) for n in names]


def test_nightly_job_on_local_stack(nightly_settings, samples):
    import psycopg
    import snowflake.connector
    from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context

    from tickforge.definitions import build_definitions
    from tickforge.defs.postgres.alerts import list_alerts
    from tickforge.defs.postgres.run_failure import run_failure_alerts
    from tickforge.defs.resources import resources_for
    from tickforge.defs.s3.resources import land_trades_parquet

    s = nightly_settings
    t0 = time.monotonic()
    trades = _day_trades(samples)
    assert trades.data.height > 10_000
    keys = land_trades_parquet(s, trades.data)
    assert keys == [f"trades/date={DAY}/part-00000.parquet"]
    golden = _store_golden_bars(s, trades)
    assert golden["1m"] > 500 and golden["5m"] > 100
    # As the streaming workers record it: BAC's 1 m bars emitted 1.5 s after their window ended.
    with psycopg.connect(s.postgres.dsn.get_secret_value()) as conn:
        conn.execute(
            f"UPDATE {s.postgres.schema_name}.bars_1m SET closed_at_ms = window_end + 1500 WHERE symbol = 'BAC'"
        )
    _produce_day_dead_letters(s)
    print(f"setup {time.monotonic() - t0:.1f}s: {trades.data.height} trades, golden {golden}")

    job = build_definitions(s).resolve_job_def("nightly")
    instance = DagsterInstance.ephemeral()

    t1 = time.monotonic()
    first = job.execute_in_process(partition_key=DAY, instance=instance, run_config=KEEP)
    print(f"first run {time.monotonic() - t1:.1f}s")
    assert first.success
    assert _materialized(first) == {
        "raw_trades_daily",
        "snowflake_raw_ticks",
        "bar_reconciliation",
        "snowflake_bar_facts",
        "bar_archive",
        "snowflake_dim_calendar",
        "snowflake_dead_letter_facts",
        *(f"marts/{m}" for m in MARTS),
        *RESEARCH,
        "paper_trading_report",
    }
    checks = _checks(first)
    # No picks were chosen for the day itself (the research picks the next weekday's): an empty paper day.
    assert checks.pop("paper_decisions_match_backtest") and checks.pop("paper_fills_keep_the_book")
    # The research loop after the reconciliation (tests/integration/test_dagster_research.py covers it).
    assert all(checks.pop(name) for name in RESEARCH_CHECKS)
    assert checks.pop("golden_bars_match_reference") and checks.pop("facts_match_golden_counts")
    assert checks.pop("facts_pass_expectations")
    assert checks.pop("archive_verified")
    assert checks.pop("raw_ticks_match_compacted")
    assert checks.pop("calendar_covers_loaded_days")
    assert checks.pop("dead_letter_facts_match_topic")
    # The dbt source test: every reason loaded into CORE.FACT_DEAD_LETTERS_1M is one of Reason's.
    assert checks.pop("accepted_values_fact_dead_letters_1m_reason")
    assert len(checks) == 19 and all(checks.values()), checks  # the dbt tests of the marts
    compacted = first.asset_materializations_for_node("raw_trades_daily")[0].metadata
    assert compacted["rows"].value == trades.data.height and compacted["source_objects"].value == 1
    assert first.asset_materializations_for_node("bar_archive")[0].metadata["within_retention"].value is True
    with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
        db = conn.cursor()
        movers = db.execute(
            "SELECT count(*), count(DISTINCT bucket_start), min(move_rank) FROM MART.MART_TOP_MOVERS_15M"
        ).fetchone()
        hourly = db.execute("SELECT sum(bars_5m), sum(volume) FROM MART.MART_PRICE_1H").fetchone()
        session = db.execute(
            "SELECT max_by(session_vwap, window_start) FROM MART.MART_SESSION_VWAP WHERE symbol = 'BAC'"
        ).fetchone()[0]
        minute = db.execute(
            "SELECT timeframe, symbol, sum(bars), sum(bars_with_latency), min(emit_latency_p50_ms), "
            "max(emit_latency_max_ms) FROM MART.MART_PIPELINE_MINUTE_METRICS "
            "GROUP BY timeframe, symbol ORDER BY timeframe, symbol"
        ).fetchall()
        rolling = db.execute("SELECT count(rolling_vwap_30m) FROM MART.MART_ROLLING_VWAP").fetchone()[0]
        dead = db.execute(
            "SELECT minute_start, timeframe, symbol, bars, dead_letters, late_ticks "
            "FROM MART.MART_PIPELINE_MINUTE_METRICS WHERE dead_letters > 0 ORDER BY 1, 2, 3"
        ).fetchall()
    assert movers[0] > 0 and movers[2] == 1
    assert hourly[0] == golden["5m"]
    bac = trades.data.filter(pl.col("symbol") == "BAC")
    assert hourly[1] == pytest.approx(trades.data["size"].sum())
    assert session == pytest.approx((bac["price"] * bac["size"]).sum() / bac["size"].sum())
    assert rolling > 0
    assert sum(r[2] for r in minute if r[0] == "1m") == golden["1m"]
    assert sum(r[2] for r in minute if r[0] == "5m") == golden["5m"]
    latency = {(r[0], r[1]): r[3:] for r in minute}
    # Dead letters per minute and symbol, on every timeframe's row (bars = 0 where none closed):
    # the pre-open minute has only dead letters (naming no symbol); no 5 m bar closes at 14:30.
    assert dead == [
        (T0300, "1m", "", 0, 2, 0),
        (T0300, "5m", "", 0, 2, 0),
        (T1430, "1m", "AIG", 1, 1, 0),
        (T1430, "1m", "BAC", 1, 3, 3),
        (T1430, "5m", "AIG", 0, 1, 0),
        (T1430, "5m", "BAC", 0, 3, 3),
    ]
    assert latency[("1m", "BAC")][1:] == (1500, 1500) and latency[("1m", "BAC")][0] > 0
    assert latency[("1m", "AIG")] == (0, None, None) and latency[("5m", "BAC")] == (0, None, None)
    facts = _fact_rows(s)
    assert facts["CORE.FACT_TICKS_60S"] == golden["1m"]
    assert facts["CORE.FACT_TICKS_300S"] == golden["5m"]
    assert facts["CORE.DIM_SYMBOL"] == len(SYMBOLS)
    assert [r[:5] for r in facts["CORE.FACT_DEAD_LETTERS_1M"]] == [
        (T0300, "missing_symbol", "", "t.ticks", 2),
        (T1430, "bad_price", "AIG", "t.ticks", 1),
        (T1430, "late", "BAC", "t.ticks", 3),
    ]
    dead_load = first.asset_materializations_for_node("snowflake_dead_letter_facts")[0].metadata
    assert dead_load["dead_letters"].value == 6 and dead_load["inserted"].value == 3
    raw_load = first.asset_materializations_for_node("snowflake_raw_ticks")[0].metadata
    assert facts["RAW.TICKS"][:3] == (compacted["rows"].value, 1, f"compacted/trades/date={DAY}/trades.parquet")
    assert [tuple(r) for r in facts["CORE.DIM_CALENDAR"]] == [(DAY, 2, "Tue", False, 10, 4, 2013)]
    assert raw_load["sha256"].value == compacted["sha256"].value
    assert raw_load["inserted"].value == trades.data.height and facts["RAW.TICKS"][3] == facts["RAW.TICKS"][4]
    recon = first.asset_materializations_for_node("bar_reconciliation")[0].metadata
    assert recon["total_expected"].value == sum(golden.values())
    assert recon["total_differing"].value == 0

    t2 = time.monotonic()
    second = job.execute_in_process(
        partition_key=DAY, instance=instance, run_config=KEEP, asset_selection=_keys(NO_MARTS)
    )
    print(f"second run {time.monotonic() - t2:.1f}s")
    assert second.success and all(_checks(second).values())
    assert _fact_rows(s) == facts  # same counts, nothing reloaded (LOADED_AT unchanged)
    load = second.asset_materializations_for_node("snowflake_bar_facts")[0].metadata
    assert load["changed"].value == 0
    assert second.asset_materializations_for_node("snowflake_raw_ticks")[0].metadata["changed"].value == 0
    assert second.asset_materializations_for_node("snowflake_dim_calendar")[0].metadata["inserted"].value == 0
    assert second.asset_materializations_for_node("snowflake_dead_letter_facts")[0].metadata["changed"].value == 0

    # A golden 1 m bar goes wrong: the blocking check fails and the warehouse is not touched.
    with psycopg.connect(s.postgres.dsn.get_secret_value()) as conn:
        conn.execute(
            f"UPDATE {s.postgres.schema_name}.bars_1m SET high = high + 1 "
            "WHERE (symbol, window_start) = (SELECT symbol, window_start "
            f"FROM {s.postgres.schema_name}.bars_1m ORDER BY symbol, window_start LIMIT 1)"
        )
    t3 = time.monotonic()
    third = job.execute_in_process(
        partition_key=DAY, instance=instance, raise_on_error=False, run_config=KEEP, asset_selection=_keys(NO_MARTS)
    )
    print(f"corrupted run {time.monotonic() - t3:.1f}s")
    assert not third.success
    assert _checks(third) == {
        "golden_bars_match_reference": False,
        "raw_ticks_match_compacted": True,
        "dead_letter_facts_match_topic": True,
    }
    assert _materialized(third) == {
        "raw_trades_daily",
        "snowflake_raw_ticks",
        "bar_reconciliation",
        "snowflake_dead_letter_facts",
    }
    evaluation = next(e for e in third.get_asset_check_evaluations() if not e.passed)
    assert evaluation.metadata["differing"].value == 1
    assert _fact_rows(s) == facts

    # The run-failure sensor records the failed run as an alert (once).
    postgres = resources_for(s, env_secrets=False)["postgres"]
    failure = next(e for e in third.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    for _ in range(2):
        ctx = build_run_status_sensor_context(
            sensor_name="run_failure_alerts",
            dagster_instance=instance,
            dagster_run=third.dagster_run,
            dagster_event=failure,
            resources={"postgres": postgres},
        ).for_run_failure()
        run_failure_alerts(ctx)
    alerts = list_alerts(postgres, "run_failure")
    assert len(alerts) == 1 and alerts[0]["details"]["run_id"] == third.run_id
    assert alerts[0]["details"]["job"] == "nightly"

    # Repaired, and past the default retention (the data is from 2013): the day is archived.
    with psycopg.connect(s.postgres.dsn.get_secret_value()) as conn:
        conn.execute(
            f"UPDATE {s.postgres.schema_name}.bars_1m SET high = high - 1 "
            "WHERE (symbol, window_start) = (SELECT symbol, window_start "
            f"FROM {s.postgres.schema_name}.bars_1m ORDER BY symbol, window_start LIMIT 1)"
        )
    t4 = time.monotonic()
    fourth = job.execute_in_process(partition_key=DAY, instance=instance, asset_selection=_keys(NO_MARTS))
    print(f"archiving run {time.monotonic() - t4:.1f}s")
    assert fourth.success and all(_checks(fourth).values()), _checks(fourth)
    archived = fourth.asset_materializations_for_node("bar_archive")[0].metadata
    assert archived["within_retention"].value is False
    assert archived["archived"].value == archived["deleted"].value == sum(golden.values())
    objects = archived["objects"].value
    assert {tf: objects[tf]["rows"] for tf in golden} == golden
    with psycopg.connect(s.postgres.dsn.get_secret_value()) as conn:
        for tf in golden:
            assert conn.execute(f"SELECT count(*) FROM {s.postgres.schema_name}.bars_{tf}").fetchone()[0] == 0
    store = resources_for(s, env_secrets=False)["object_store"]
    bars_1m = store.read_parquet(store.archive_bucket, objects["1m"]["object"])
    assert bars_1m.height == golden["1m"] and set(bars_1m["symbol"]) == set(SYMBOLS)
    assert _fact_rows(s) == facts  # the warehouse keeps the day

    # Archiving again: nothing left to move, the objects verify as they are.
    from tickforge.defs.s3.archive import archive_timeframe

    again = archive_timeframe(resources_for(s, env_secrets=False)["postgres"], store, "1m", DAY)
    assert again["archived"] == 0 and again["rows"] == golden["1m"] and again["sha256"] == objects["1m"]["sha256"]
