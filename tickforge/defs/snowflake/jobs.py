"""The intraday Snowflake load: one 5-minute window of golden bars per run (see the sensor)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

snowflake_window_job = define_asset_job(
    "snowflake_window_facts_job",
    selection=AssetSelection.assets("snowflake_window_facts"),
    executor_def=in_process_executor,
    description="Upsert one window of golden 1 m / 5 m bars into the Snowflake facts.",
)
