"""The Dagster code location: it loads, and its shape is pinned."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).with_name("dagster")


@pytest.fixture()
def default_settings(monkeypatch, tmp_path):
    """Settings from defaults only: no TICKFORGE_* variables, no .env, no stack.env."""
    from tickforge.platform.settings import Settings

    for key in list(os.environ):
        if key.startswith("TICKFORGE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return Settings()


def test_dagster_definitions_validate(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKFORGE_", "DAGSTER_HOME"))}
    env["TICKFORGE_STATE_DIR"] = str(tmp_path / "state")  # no stack.env: default settings
    proc = subprocess.run(
        [str(DAGSTER), "definitions", "validate", "-m", "tickforge.definitions"],
        # Not from REPO: its dagster.yaml wants the stack's PostgreSQL.
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_definitions_snapshot(default_settings):
    from tickforge.definitions import build_definitions

    defs = build_definitions(default_settings)
    graph = defs.resolve_asset_graph()
    asset_keys = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    jobs = sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__"))
    schedules = {
        s.name: (s.cron_schedule, s.execution_timezone, s.job_name)
        for s in (defs.resolve_schedule_def(d.name) for d in defs.schedules or [])
    }
    sensors = sorted(s.name for s in defs.sensors or [])
    tfs = ["1s", "1m", "3m", "5m", "15m"]
    strategies = [
        "bollinger_reversion",
        "donchian_breakout",
        "ema_cross",
        "macd_cross",
        "orb_breakout",
        "rsi_reversion",
        "vwap_reversion",
    ]
    marts = [
        "mart_next_day_picks",
        "mart_pipeline_minute_metrics",
        "mart_price_1h",
        "mart_rolling_vwap",
        "mart_session_vwap",
        "mart_top_movers_15m",
        "mart_volatility_bands",
    ]
    assert asset_keys == sorted(
        [
            "kafka/ticks",
            "kafka/dead_letter",
            "s3/raw_trades",
            "raw_trades_daily",
            "snowflake_raw_ticks",
            "bar_reconciliation",
            "snowflake_bar_facts",
            "snowflake_dim_calendar",
            "snowflake_window_facts",
            "bar_archive",
            "snowflake_dead_letter_facts",
            "snowflake/core/fact_ticks_60s",
            "snowflake/core/fact_ticks_300s",
            "snowflake/core/fact_dead_letters_1m",
            "snowflake/core/next_day_picks",
        ]
        + [f"kafka/bars_{tf}" for tf in tfs]
        + [f"postgres/bars_{tf}" for tf in tfs]
        + [f"marts/{m}" for m in marts]
        + [
            "files/daily_bars",
            "strategy_scores",
            "next_day_picks",
            "picks_scorecard",
            "snowflake_backtest_results",
            "snowflake_next_day_picks",
            "paper_trading_report",
        ]
        + [f"backtest_sweep/{s}" for s in strategies]
    )
    dbt_tests = [
        "marts/mart_next_day_picks:not_null_mart_next_day_picks_day",
        "marts/mart_next_day_picks:not_null_mart_next_day_picks_pick_rank",
        "marts/mart_next_day_picks:not_null_mart_next_day_picks_weight",
        "marts/mart_next_day_picks:unique_mart_next_day_picks_day_symbol_strategy_timeframe_params",
        "marts/mart_pipeline_minute_metrics:not_null_mart_pipeline_minute_metrics_bars",
        "marts/mart_pipeline_minute_metrics:not_null_mart_pipeline_minute_metrics_dead_letters",
        "marts/mart_pipeline_minute_metrics:not_null_mart_pipeline_minute_metrics_late_ticks",
        "marts/mart_pipeline_minute_metrics:not_null_mart_pipeline_minute_metrics_minute_start",
        "marts/mart_pipeline_minute_metrics:unique_mart_pipeline_minute_metrics_minute_timeframe_symbol",
        "marts/mart_price_1h:not_null_mart_price_1h_symbol",
        "marts/mart_price_1h:not_null_mart_price_1h_volume",
        "marts/mart_rolling_vwap:not_null_mart_rolling_vwap_bar_id",
        "marts/mart_rolling_vwap:unique_mart_rolling_vwap_bar_id",
        "marts/mart_session_vwap:not_null_mart_session_vwap_session_vwap",
        "marts/mart_top_movers_15m:not_null_mart_top_movers_15m_bucket_start",
        "marts/mart_top_movers_15m:not_null_mart_top_movers_15m_move_rank",
        "marts/mart_top_movers_15m:not_null_mart_top_movers_15m_symbol",
        "marts/mart_volatility_bands:not_null_mart_volatility_bands_bar_id",
        "marts/mart_volatility_bands:unique_mart_volatility_bands_bar_id",
        "snowflake/core/fact_dead_letters_1m:accepted_values_fact_dead_letters_1m_reason",
    ]
    assert checks == sorted(
        [
            "bar_archive:archive_verified",
            "bar_reconciliation:golden_bars_match_reference",
            "snowflake_bar_facts:facts_match_golden_counts",
            "snowflake_bar_facts:facts_pass_expectations",
            "snowflake_window_facts:window_facts_match_golden_counts",
            "snowflake_raw_ticks:raw_ticks_match_compacted",
            "snowflake_dim_calendar:calendar_covers_loaded_days",
            "snowflake_dead_letter_facts:dead_letter_facts_match_topic",
            "kafka/dead_letter:dead_letter_rate_within_limit",
            *(f"{p}/bars_{tf}:freshness_check" for tf in tfs for p in ("kafka", "postgres")),
            *dbt_tests,
            *(f"backtest_sweep/{s}:sweep_metrics_finite" for s in strategies),
            "strategy_scores:scores_finite",
            "next_day_picks:picks_use_only_prior_bars",
            "next_day_picks:picks_within_budget",
            "next_day_picks:pick_trades_match_equity",
            "next_day_picks:picks_reproducible",
            "picks_scorecard:scorecard_covers_picks",
            "snowflake_backtest_results:backtest_results_match_scores",
            "snowflake_next_day_picks:snowflake_picks_match_postgres",
            "paper_trading_report:paper_decisions_match_backtest",
            "paper_trading_report:paper_fills_keep_the_book",
        ]
    )
    assert jobs == ["nightly", "research", "snowflake_window_facts_job"]
    assert schedules == {"nightly_schedule": ("0 2 * * *", "America/New_York", "nightly")}
    assert sensors == [
        "dead_letter_sensor",
        "run_failure_alerts",
        "snowflake_window_sensor",
        "streaming_freshness_checks_sensor",
        "streaming_watermark_sensor",
    ]
    nightly = defs.resolve_job_def("nightly")
    assert {n.name for n in nightly.nodes} >= {
        "raw_trades_daily",
        "snowflake_raw_ticks",
        "bar_reconciliation",
        "snowflake_bar_facts",
        "bar_archive",
        "snowflake_dead_letter_facts",
        "snowflake_dim_calendar",
        "dbt_marts",
        *(f"backtest_sweep__{s}" for s in strategies),
        "strategy_scores",
        "next_day_picks",
        "picks_scorecard",
        "snowflake_backtest_results",
        "snowflake_next_day_picks",
    }
    research = defs.resolve_job_def("research")
    assert {
        n.name
        for n in research.nodes
        if not n.name.endswith(("_finite", "_reproducible", "_budget", "_equity", "_prior_bars", "_covers_picks"))
    } == {
        *(f"backtest_sweep__{s}" for s in strategies),
        "strategy_scores",
        "next_day_picks",
        "picks_scorecard",
        "snowflake_backtest_results",
        "snowflake_next_day_picks",
    }
    assert research.executor_def.name == "multiprocess"


def test_lineage_ticks_to_golden_tables(default_settings):
    from dagster import AssetKey

    from tickforge.definitions import build_definitions

    graph = build_definitions(default_settings).resolve_asset_graph()

    def parents(key: str) -> set[str]:
        node = graph.get(AssetKey.from_user_string(key))
        return {k.to_user_string() for k in node.parent_keys}

    assert parents("kafka/bars_1m") == {"kafka/ticks"}
    assert parents("postgres/bars_1m") == {"kafka/bars_1m"}
    assert parents("s3/raw_trades") == {"kafka/ticks"}
    assert parents("raw_trades_daily") == {"s3/raw_trades"}
    assert parents("snowflake_raw_ticks") == {"raw_trades_daily"}
    assert parents("snowflake_dim_calendar") == {"snowflake_bar_facts", "snowflake_raw_ticks"}
    assert {"raw_trades_daily", "postgres/bars_1m"} <= parents("bar_reconciliation")
    assert parents("snowflake_bar_facts") == {"bar_reconciliation", "postgres/bars_1m", "postgres/bars_5m"}
    assert {"snowflake_bar_facts", "bar_reconciliation"} <= parents("bar_archive")
    assert parents("marts/mart_price_1h") == {"snowflake_bar_facts", "snowflake/core/fact_ticks_300s"}
    assert parents("snowflake_dead_letter_facts") == {"kafka/dead_letter"}
    assert parents("snowflake/core/fact_dead_letters_1m") == {"snowflake_dead_letter_facts"}
    assert parents("marts/mart_pipeline_minute_metrics") == {
        "snowflake_bar_facts",
        "snowflake/core/fact_ticks_60s",
        "snowflake/core/fact_ticks_300s",
        "snowflake_dead_letter_facts",
        "snowflake/core/fact_dead_letters_1m",
    }
    assert parents("marts/mart_top_movers_15m") == {"snowflake_bar_facts", "snowflake/core/fact_ticks_60s"}
    # Research: daily bars and the golden intraday bars -> sweeps -> scores -> picks -> scorecard.
    assert parents("backtest_sweep/ema_cross") == {
        "files/daily_bars",
        "postgres/bars_5m",
        "postgres/bars_15m",
        "bar_reconciliation",
    }
    assert parents("strategy_scores") == {
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
    }
    assert parents("next_day_picks") == {"strategy_scores"}
    assert parents("picks_scorecard") == {"next_day_picks"}
    assert parents("snowflake_backtest_results") == {"strategy_scores"}
    assert parents("snowflake_next_day_picks") == {"next_day_picks"}
    assert parents("snowflake/core/next_day_picks") == {"snowflake_next_day_picks"}
    assert parents("marts/mart_next_day_picks") == {"snowflake_next_day_picks", "snowflake/core/next_day_picks"}
    assert graph.get(AssetKey("kafka/ticks".split("/"))).kinds == {"kafka"}
    assert graph.get(AssetKey(["postgres", "bars_5m"])).kinds == {"postgres"}


@pytest.mark.parametrize(
    ("local_tick", "day"),
    [
        (datetime(2013, 10, 9, 2, 0, tzinfo=ZoneInfo("America/New_York")), "2013-10-08"),  # EDT
        (datetime(2014, 1, 7, 2, 0, tzinfo=ZoneInfo("America/New_York")), "2014-01-06"),  # EST
    ],
)
def test_nightly_schedule_runs_previous_utc_day(local_tick, day):
    from dagster import build_schedule_context

    from tickforge.defs.nightly import nightly_schedule

    request = nightly_schedule(build_schedule_context(scheduled_execution_time=local_tick))
    assert request.partition_key == day
    assert request.run_key == day


def test_resources_local_stack_vs_production(default_settings):
    from tickforge.defs.resources import resources_for

    production = resources_for(default_settings)["snowflake"]
    assert production.additional_snowflake_connection_args is None
    local = default_settings.model_copy(
        update={
            "snowflake": default_settings.snowflake.model_copy(
                update={"host": "127.0.0.1", "port": 8765, "protocol": "http"}
            )
        }
    )
    args = resources_for(local)["snowflake"].additional_snowflake_connection_args
    assert (args["host"], args["port"], args["protocol"]) == ("127.0.0.1", 8765, "http")
    assert resources_for(default_settings)["object_store"].endpoint_url is None


def test_snowflake_ddl_is_idempotent_sql():
    from tickforge.defs.lib.snowflake import ddl_statements
    from tickforge.defs.snowflake.warehouse import bar_id

    statements = ddl_statements("TICKFORGE")
    assert statements[:2] == ["CREATE DATABASE IF NOT EXISTS TICKFORGE", "USE DATABASE TICKFORGE"]
    assert all("IF NOT EXISTS" in s for s in statements if s.startswith("CREATE"))
    created = {s.split("EXISTS", 1)[1].split("(")[0].strip() for s in statements if s.startswith("CREATE TABLE")}
    altered = [s for s in statements if s.startswith("ALTER")]
    assert altered and all("ADD COLUMN IF NOT EXISTS" in s for s in altered)
    assert created == {
        "CORE.FACT_TICKS_60S",
        "CORE.FACT_TICKS_300S",
        "CORE.DIM_SYMBOL",
        "RAW.TICKS",
        "CORE.DIM_CALENDAR",
        "CORE.FACT_DEAD_LETTERS_1M",
        "CORE.FACT_BACKTEST_RESULTS",
        "CORE.NEXT_DAY_PICKS",
    }
    assert bar_id("BAC", 1381219200000, 60) == "BAC-1381219200000-60"
    with pytest.raises(ValueError):
        ddl_statements("X; DROP")


def test_dagster_storage_scheme():
    from tickforge.defs.postgres.dagster_storage import psycopg2_url

    assert psycopg2_url("postgresql://u@h:1/db") == "postgresql+psycopg2://u@h:1/db"
    assert psycopg2_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
