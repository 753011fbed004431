"""The dbt CLI resource of the marts project (``dbt_marts/``)."""

from __future__ import annotations

from dagster_dbt import DbtCliResource

from tickforge.defs.dbt.assets import DBT_PROJECT_DIR, dbt_executable


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )
