"""The research assets on the real local stack (PostgreSQL, S3 stand-in, Snowflake stand-in).

Golden bars of one real day (BAC and AIG trades of 2013-10-08, built by the streaming kernel
offline) are stored in PostgreSQL; the daily bars are the repository's ten-symbol sample. The
research job materializes, for that day, every strategy's sweep, the scores, the picks for the
next weekday, the scorecard and both Snowflake loads, with every check passing; the picks equal
a fresh end-to-end computation and the picks files; a rerun gives the same picks; a look-ahead
pick (chosen with a month of bars after its day) fails the look-ahead check and an over-budget
set fails the budget check. The multiprocess executor runs the per-strategy sweeps as parallel
processes.
"""

from __future__ import annotations

import json
import time
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from tests.integration.test_dagster_nightly import DAY, _day_trades, _store_golden_bars, nightly_settings  # noqa: F401

pytestmark = pytest.mark.integration

PICK_DAY = date(2013, 10, 9)
STRATEGIES = (
    "ema_cross",
    "rsi_reversion",
    "donchian_breakout",
    "macd_cross",
    "bollinger_reversion",
    "vwap_reversion",
    "orb_breakout",
)
RESEARCH = {
    *(f"backtest_sweep/{s}" for s in STRATEGIES),
    "strategy_scores",
    "next_day_picks",
    "picks_scorecard",
    "snowflake_backtest_results",
    "snowflake_next_day_picks",
}
CHECK_DAY = {"dagster/partition": DAY}  # checks alone: no asset for execute_in_process to infer partitions from
CHECKS = {
    "sweep_metrics_finite",
    "scores_finite",
    "picks_use_only_prior_bars",
    "picks_within_budget",
    "pick_trades_match_equity",
    "picks_reproducible",
    "scorecard_covers_picks",
    "backtest_results_match_scores",
    "snowflake_picks_match_postgres",
}


def _checks(result) -> list[tuple[str, str, bool]]:
    return sorted((e.asset_key.to_user_string(), e.check_name, e.passed) for e in result.get_asset_check_evaluations())


def _materialized(result) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}


def _picks_check_job(defs):
    from dagster import AssetKey, AssetSelection, Definitions, define_asset_job

    job = define_asset_job("picks_checks", selection=AssetSelection.checks_for_assets(AssetKey("next_day_picks")))
    return Definitions.merge(defs, Definitions(jobs=[job])).resolve_job_def("picks_checks")


def _snowflake_rows(s, table: str) -> list[tuple]:
    import snowflake.connector

    with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
        return (
            conn.cursor()
            .execute(f"SELECT DAY, SYMBOL, STRATEGY, TIMEFRAME, PARAMS FROM {table} ORDER BY 1, 2, 3, 4, 5")
            .fetchall()
        )


def test_research_assets_on_local_stack(nightly_settings, samples):  # noqa: F811
    from dagster import DagsterInstance

    from tickforge.definitions import build_definitions
    from tickforge.defs.research.assets import pick_day, picks_window_bars
    from tickforge.defs.research.store import read_rows, replace_rows
    from tickforge.defs.resources import resources_for
    from tickforge.research.io import read_picks
    from tickforge.research.scoring import next_day_picks
    from tickforge.research.store import NEXT_DAY_PICKS, PICK_EQUITY, PICK_KEY, PICKS_SCORECARD, STRATEGY_SCORES

    s = nightly_settings
    golden = _store_golden_bars(s, _day_trades(samples))
    assert golden["5m"] > 100 and golden["15m"] > 30
    defs = build_definitions(s)
    job = defs.resolve_job_def("research")
    instance = DagsterInstance.ephemeral()
    assert pick_day(DAY) == PICK_DAY and pick_day("2013-10-11") == date(2013, 10, 14)  # Friday -> Monday

    started = time.monotonic()
    first = job.execute_in_process(partition_key=DAY, instance=instance)
    print(f"research job (in-process) {time.monotonic() - started:.1f}s")
    assert first.success
    assert _materialized(first) == RESEARCH
    checks = _checks(first)
    assert {c[1] for c in checks} == CHECKS and len(checks) == len(STRATEGIES) + 8, checks
    assert all(c[2] for c in checks), [c for c in checks if not c[2]]

    resources = resources_for(s, env_secrets=False)
    postgres = resources["postgres"]
    research = defs.resources["research"]
    registry = research.registry()
    picks = read_rows(postgres, NEXT_DAY_PICKS, '"day" = %s', [PICK_DAY])
    scores = read_rows(postgres, STRATEGY_SCORES, '"day" = %s', [PICK_DAY])
    # Every daily strategy on the ten symbols and the intraday ones on BAC and AIG, in-sample only.
    assert set(scores.filter(pl.col("timeframe") == "1d")["symbol"]) == {
        "AAPL",
        "AIG",
        "BAC",
        "BNO",
        "EEM",
        "FB",
        "IWM",
        "SPY",
        "USO",
        "WM",
    }
    assert set(scores.filter(pl.col("timeframe") != "1d")["symbol"]) == {"AIG", "BAC"}
    assert set(scores["timeframe"]) == {"1d", "5m", "15m"}
    assert scores["sample"].unique().to_list() == ["in"]
    assert 1 <= picks.height <= registry.scoring.max_picks
    assert picks["weight"].sum() == pytest.approx(1.0)
    cutoff = 1_381_291_200_000  # 2013-10-09 00:00 New York
    assert picks["period_end"].max() <= cutoff
    assert read_rows(postgres, PICK_EQUITY, '"day" = %s', [PICK_DAY])["window_start"].max() < cutoff
    # The same picks as one end-to-end call of the research room, and as the runners' files.
    bars, _ = picks_window_bars(research, postgres, registry, PICK_DAY)
    # Intraday research sees the regular session the trading path trades (the golden bars hold
    # the extended hours too: 04:00-20:00 New York).
    open_ms, close_ms = 1_381_239_000_000, 1_381_262_400_000  # 2013-10-08 09:30 and 16:00 New York
    for tf in ("5m", "15m"):
        starts = np.concatenate([series.window_start for series in bars[tf]])
        assert starts.size and open_ms <= starts.min() and starts.max() < close_ms, tf
    assert picks.select(PICK_KEY).equals(next_day_picks(bars, registry, PICK_DAY).sort(list(PICK_KEY)).select(PICK_KEY))
    for suffix in ("parquet", "yaml"):
        dated = read_picks(research.picks_path(DAY, suffix)).sort("symbol", "strategy")
        assert dated.select("symbol", "strategy", "timeframe", "params").equals(
            picks.sort("symbol", "strategy").select("symbol", "strategy", "timeframe", "params")
        )
        assert read_picks(research.latest_picks_path(suffix)).height == picks.height
    assert all(isinstance(json.loads(p), dict) for p in picks["params"])
    # Snowflake holds the same rows as PostgreSQL.
    assert [(str(r[0]), *r[1:]) for r in _snowflake_rows(s, "CORE.NEXT_DAY_PICKS")] == sorted(
        picks.select("day", "symbol", "strategy", "timeframe", "params")
        .with_columns(pl.col("day").cast(pl.String))
        .rows()
    )
    assert len(_snowflake_rows(s, "CORE.FACT_BACKTEST_RESULTS")) == scores.height
    # The scorecard: the daily sample reaches past the pick day, so daily picks are realized.
    card = read_rows(postgres, PICKS_SCORECARD)
    assert card.height == picks.height
    daily = card.filter(pl.col("timeframe") == "1d")
    assert daily.height and daily["complete"].all()
    sweep = first.asset_materializations_for_node("backtest_sweep__ema_cross")[0].metadata
    print(
        f"ema_cross sweep: {sweep['rows'].value} rows, {sweep['bar_combinations'].value:,} bar-combinations "
        f"in {sweep['sweep_seconds'].value}s; {picks.height} picks, {scores.height} scored rows"
    )

    # A rerun of the partition gives the same picks.
    second = job.execute_in_process(partition_key=DAY, instance=instance)
    assert second.success and all(c[2] for c in _checks(second))
    again = read_rows(postgres, NEXT_DAY_PICKS, '"day" = %s', [PICK_DAY])
    assert again.equals(picks)

    # Look-ahead: picks chosen with a month of bars after their day fail the look-ahead check.
    checks_job = _picks_check_job(defs)
    peeking = next_day_picks({"1d": research.daily_bars()[0]}, registry, PICK_DAY + timedelta(days=30)).with_columns(
        day=pl.lit(PICK_DAY)
    )
    assert peeking.height and peeking["period_end"].min() > cutoff
    replace_rows(postgres, NEXT_DAY_PICKS, peeking, '"day" = %s', [PICK_DAY])
    caught = checks_job.execute_in_process(tags=CHECK_DAY, instance=instance, raise_on_error=False)
    verdicts = {c[1]: c[2] for c in _checks(caught)}
    assert verdicts["picks_use_only_prior_bars"] is False
    assert verdicts["picks_reproducible"] is False  # nor are they what the bars before the day give
    # Over budget: every passing row of the day as a pick.
    passing = scores.filter(pl.col("gate").is_null())
    assert passing.height > registry.scoring.max_picks
    too_many = passing.with_columns(weight=pl.lit(1.0 / passing.height))
    replace_rows(postgres, NEXT_DAY_PICKS, too_many, '"day" = %s', [PICK_DAY])
    caught = checks_job.execute_in_process(tags=CHECK_DAY, instance=instance, raise_on_error=False)
    verdicts = {c[1]: c[2] for c in _checks(caught)}
    assert verdicts["picks_within_budget"] is False and verdicts["picks_use_only_prior_bars"] is True
    replace_rows(postgres, NEXT_DAY_PICKS, picks, '"day" = %s', [PICK_DAY])
    restored = checks_job.execute_in_process(tags=CHECK_DAY, instance=instance)
    assert restored.success and all(c[2] for c in _checks(restored))


def research_job_from_environment():
    """The research job as a child process of the multiprocess executor rebuilds it (settings from the environment)."""
    from tickforge.definitions import build_definitions
    from tickforge.platform.settings import Settings

    return build_definitions(Settings()).resolve_job_def("research")


def test_sweeps_run_as_parallel_processes(nightly_settings, tmp_path):  # noqa: F811
    """The research job's multiprocess executor runs two strategies' sweeps at once, each in its own process."""
    from dagster import AssetKey, DagsterEventType, DagsterInstance, execute_job, reconstructable

    sweeps = [AssetKey(["backtest_sweep", s]) for s in ("ema_cross", "rsi_reversion")]
    started = time.monotonic()
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        result = execute_job(
            reconstructable(research_job_from_environment),
            instance=instance,
            tags={"dagster/partition": DAY},
            asset_selection=sweeps,
        )
        assert result.success
        spans: dict[str, list[float]] = {}
        pids: dict[str, int] = {}
        for record in instance.all_logs(result.run_id):
            event = record.dagster_event
            if (
                event is None
                or not (event.step_key or "").startswith("backtest_sweep__")
                or event.step_key.endswith("_finite")
            ):
                continue
            if event.event_type == DagsterEventType.STEP_WORKER_STARTING:  # the executor launched its process
                spans[event.step_key] = [record.timestamp]
            elif event.event_type == DagsterEventType.STEP_START:
                pids[event.step_key] = event.pid
            elif event.event_type == DagsterEventType.STEP_SUCCESS:
                spans[event.step_key].append(record.timestamp)
    print(f"multiprocess research run of two sweeps {time.monotonic() - started:.1f}s: {spans}")
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, "the two sweeps' processes did not run at the same time"
    assert len(set(pids.values())) == 2
