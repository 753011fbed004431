"""The nightly batch job and its schedule: they span the integrations (raw compaction, reconciliation,
warehouse loads, marts, archive, research), so they live beside them, not in one."""

from __future__ import annotations

from datetime import UTC, timedelta

from dagster import (
    AssetSelection,
    Definitions,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    in_process_executor,
    schedule,
)

from tickforge.defs.dbt.assets import DAILY_LOADERS
from tickforge.defs.research.assets import RESEARCH_GROUP
from tickforge.defs.trading.assets import TRADING_GROUP

NIGHTLY_ASSETS = (
    "raw_trades_daily",
    "snowflake_raw_ticks",
    "bar_reconciliation",
    "snowflake_bar_facts",
    "snowflake_dead_letter_facts",
    "snowflake_dim_calendar",
    "bar_archive",
)

# The dbt tests of the marts' source tables (e.g. the reasons in CORE.FACT_DEAD_LETTERS_1M) are
# checks of those tables' assets, which no step materializes: selected by name, dbt runs them.
SOURCE_CHECKS = AssetSelection.checks_for_assets(*DAILY_LOADERS)

# The steps are small: one process for the whole run beats starting a process (and importing the
# code location, seconds on two cores) for every step.
nightly_job = define_asset_job(
    "nightly",
    selection=AssetSelection.assets(*NIGHTLY_ASSETS)
    | AssetSelection.groups("marts", RESEARCH_GROUP, TRADING_GROUP)
    | SOURCE_CHECKS,
    executor_def=in_process_executor,
    description="Compact the previous UTC day's raw trades and load them into RAW.TICKS, reconcile "
    "its golden bars with the reference oracle, load its 1 m / 5 m bars into the Snowflake facts "
    "(skipped when reconciliation fails), count its dead letters per minute into "
    "CORE.FACT_DEAD_LETTERS_1M, extend CORE.DIM_CALENDAR, rebuild the dbt marts, archive the "
    "day if past retention, and run the research loop on the reconciled bars: backtest sweeps (one "
    "step per strategy) -> strategy scores -> next-day picks -> picks scorecard, with their "
    "Snowflake loads (CORE.FACT_BACKTEST_RESULTS, CORE.NEXT_DAY_PICKS), and trade the day's picks on "
    "paper over its golden bars, quotes and prints (paper_trading_report, its parity and book checks).",
)


@schedule(
    name="nightly_schedule",
    job=nightly_job,
    cron_schedule="0 2 * * *",
    execution_timezone="America/New_York",
    description="02:00 New York: the previous UTC day is complete (it closed at 20:00 or 19:00 ET).",
)
def nightly_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    tick = context.scheduled_execution_time.astimezone(UTC)
    day = (tick - timedelta(days=1)).strftime("%Y-%m-%d")
    return RunRequest(run_key=day, partition_key=day)


assert isinstance(nightly_schedule, ScheduleDefinition)


def build_nightly_definitions() -> Definitions:
    return Definitions(jobs=[nightly_job], schedules=[nightly_schedule])
