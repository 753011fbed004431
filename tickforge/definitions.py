"""The Dagster code location: ``dagster dev -m tickforge.definitions`` (see workspace.yaml).

Everything deployment-specific comes from :func:`tickforge.platform.settings.load_settings`
(environment, ``.env``, the local stack's ``stack.env``): the same code runs on the local stack
and in production.
"""

from __future__ import annotations

from dagster import Definitions

from tickforge.assets.external import streaming_specs
from tickforge.assets.reconciliation import build_bar_reconciliation
from tickforge.assets.warehouse import facts_match_golden_counts, snowflake_bar_facts
from tickforge.jobs import nightly_job, nightly_schedule
from tickforge.platform.settings import Settings, load_settings
from tickforge.resources import resources_for


def build_definitions(settings: Settings) -> Definitions:
    timeframes = settings.streaming.timeframes
    bar_reconciliation, reconciliation_check = build_bar_reconciliation(
        timeframes, settings.streaming.allowed_lateness_ms
    )
    return Definitions(
        assets=[
            *streaming_specs(timeframes, settings.kafka.topic_prefix, settings.postgres.schema_name),
            bar_reconciliation,
            snowflake_bar_facts,
        ],
        asset_checks=[reconciliation_check, facts_match_golden_counts],
        jobs=[nightly_job],
        schedules=[nightly_schedule],
        resources=resources_for(settings),
    )


defs = build_definitions(load_settings())
