"""The Dagster code location: ``dagster dev -m tickforge.definitions`` (see workspace.yaml).

Each integration in ``tickforge/defs/<integration>/`` builds its assets, checks, sensors, jobs
and resources in its ``definitions.py``; this module merges them. Everything deployment-specific
comes from :func:`tickforge.platform.settings.load_settings` (environment, ``.env``, the local
stack's ``stack.env``): the same code runs on the local stack and in production.
"""

from __future__ import annotations

from dagster import Definitions

from tickforge.defs.dbt.definitions import build_dbt_definitions
from tickforge.defs.nightly import build_nightly_definitions
from tickforge.defs.postgres.definitions import build_postgres_definitions
from tickforge.defs.research.definitions import build_research_definitions
from tickforge.defs.s3.definitions import build_s3_definitions
from tickforge.defs.snowflake.definitions import build_snowflake_definitions
from tickforge.defs.streaming.definitions import build_streaming_definitions
from tickforge.defs.trading.definitions import build_trading_definitions
from tickforge.platform.settings import Settings, load_settings


def build_definitions(settings: Settings) -> Definitions:
    return Definitions.merge(
        build_streaming_definitions(settings),
        build_postgres_definitions(settings),
        build_s3_definitions(settings),
        build_snowflake_definitions(settings),
        build_dbt_definitions(settings),
        build_nightly_definitions(),
        build_research_definitions(settings),
        build_trading_definitions(settings),
    )


defs = build_definitions(load_settings())
