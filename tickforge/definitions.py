"""The Dagster code location: ``dagster dev -m tickforge.definitions`` (see workspace.yaml).

Everything deployment-specific comes from :func:`tickforge.platform.settings.load_settings`
(environment, ``.env``, the local stack's ``stack.env``): the same code runs on the local stack
and in production.
"""

from __future__ import annotations

from dagster import Definitions

from tickforge.assets.archive import build_bar_archive
from tickforge.assets.calendar import snowflake_dim_calendar
from tickforge.assets.compaction import raw_trades_daily
from tickforge.assets.dead_letter_facts import build_dead_letter_facts
from tickforge.assets.external import streaming_specs
from tickforge.assets.fact_expectations import facts_pass_expectations
from tickforge.assets.marts import build_marts, dbt_resource, fact_table_specs
from tickforge.assets.raw_ticks import snowflake_raw_ticks
from tickforge.assets.reconciliation import build_bar_reconciliation
from tickforge.assets.warehouse import snowflake_bar_facts, snowflake_window_facts
from tickforge.defs.research.definitions import build_research_definitions
from tickforge.defs.trading.definitions import build_trading_definitions
from tickforge.jobs import nightly_job, nightly_schedule
from tickforge.jobs.intraday import snowflake_window_job
from tickforge.platform.settings import Settings, load_settings
from tickforge.resources import resources_for
from tickforge.sensors.dead_letters import build_dead_letter_rate_check, build_dead_letter_sensor
from tickforge.sensors.run_failure import run_failure_alerts
from tickforge.sensors.snowflake_window import snowflake_window_sensor
from tickforge.sensors.streaming_watermarks import (
    build_streaming_freshness_sensor,
    build_streaming_watermark_sensor,
    streaming_freshness_checks,
)


def build_definitions(settings: Settings) -> Definitions:
    timeframes = settings.streaming.timeframes
    bar_reconciliation, reconciliation_check = build_bar_reconciliation(
        timeframes, settings.streaming.allowed_lateness_ms
    )
    bar_archive, archive_check = build_bar_archive(timeframes)
    freshness_checks = streaming_freshness_checks(timeframes)
    platform = Definitions(
        assets=[
            *streaming_specs(timeframes, settings.kafka.topic_prefix, settings.postgres.schema_name),
            raw_trades_daily,
            snowflake_raw_ticks,
            bar_reconciliation,
            snowflake_bar_facts,
            build_dead_letter_facts(settings),
            snowflake_dim_calendar,
            snowflake_window_facts,
            bar_archive,
            *fact_table_specs(),
            build_marts(settings.state_dir),
        ],
        asset_checks=[
            reconciliation_check, archive_check, facts_pass_expectations, *freshness_checks,
            build_dead_letter_rate_check(settings),
        ],
        jobs=[nightly_job, snowflake_window_job],
        schedules=[nightly_schedule],
        sensors=[
            build_dead_letter_sensor(settings),
            run_failure_alerts,
            snowflake_window_sensor,
            build_streaming_watermark_sensor(timeframes),
            build_streaming_freshness_sensor(freshness_checks),
        ],
        resources={**resources_for(settings), "dbt": dbt_resource()},
    )
    return Definitions.merge(platform, build_research_definitions(settings), build_trading_definitions(settings))


defs = build_definitions(load_settings())
