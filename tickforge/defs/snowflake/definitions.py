"""The Snowflake definitions, merged into the code location by :mod:`tickforge.definitions`."""

from __future__ import annotations

from dagster import Definitions

from tickforge.defs.snowflake.calendar import snowflake_dim_calendar
from tickforge.defs.snowflake.dead_letter_facts import build_dead_letter_facts
from tickforge.defs.snowflake.fact_expectations import facts_pass_expectations
from tickforge.defs.snowflake.jobs import snowflake_window_job
from tickforge.defs.snowflake.raw_ticks import snowflake_raw_ticks
from tickforge.defs.snowflake.resources import snowflake_resource
from tickforge.defs.snowflake.warehouse import snowflake_bar_facts, snowflake_window_facts
from tickforge.defs.snowflake.window_sensor import snowflake_window_sensor
from tickforge.platform.settings import Settings


def build_snowflake_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=[
            snowflake_raw_ticks,
            snowflake_bar_facts,
            build_dead_letter_facts(settings.kafka.topic_prefix),
            snowflake_dim_calendar,
            snowflake_window_facts,
        ],
        asset_checks=[facts_pass_expectations],
        jobs=[snowflake_window_job],
        sensors=[snowflake_window_sensor],
        resources={"snowflake": snowflake_resource(settings)},
    )
