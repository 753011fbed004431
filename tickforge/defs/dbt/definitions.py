"""The dbt definitions, merged into the code location by :mod:`tickforge.definitions`."""

from __future__ import annotations

from dagster import Definitions

from tickforge.defs.dbt.assets import build_marts, fact_table_specs
from tickforge.defs.dbt.resources import dbt_resource
from tickforge.platform.settings import Settings


def build_dbt_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=[*fact_table_specs(), build_marts()],
        resources={"dbt": dbt_resource()},
    )
