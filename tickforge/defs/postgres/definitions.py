"""The PostgreSQL definitions, merged into the code location by :mod:`tickforge.definitions`."""

from __future__ import annotations

from dagster import Definitions

from tickforge.defs.postgres.reconciliation import build_bar_reconciliation
from tickforge.defs.postgres.resources import postgres_resource
from tickforge.defs.postgres.run_failure import run_failure_alerts
from tickforge.platform.settings import Settings


def build_postgres_definitions(settings: Settings) -> Definitions:
    bar_reconciliation, reconciliation_check = build_bar_reconciliation(
        settings.streaming.timeframes, settings.streaming.allowed_lateness_ms
    )
    return Definitions(
        assets=[bar_reconciliation],
        asset_checks=[reconciliation_check],
        sensors=[run_failure_alerts],
        resources={"postgres": postgres_resource(settings)},
    )
