"""``run_failure_alerts``: every failed run of this code location becomes an alert in PostgreSQL."""

from __future__ import annotations

from dagster import RunFailureSensorContext, run_failure_sensor

from tickforge.defs.postgres.alerts import record_alert
from tickforge.defs.postgres.resources import PostgresResource


@run_failure_sensor(
    name="run_failure_alerts",
    description="Records an alert (pipeline_alerts in PostgreSQL) for each failed run.",
    minimum_interval_seconds=30,
)
def run_failure_alerts(context: RunFailureSensorContext, postgres: PostgresResource) -> None:
    run = context.dagster_run
    error = context.failure_event.message or ""
    step_errors = [
        f"{e.step_key}: {step_error.message.strip()}"
        for e in context.get_step_failure_events()
        # Every event here is a STEP_FAILURE, so its data is StepFailureData (error still optional).
        if e.event_specific_data is not None and (step_error := e.step_failure_data.error) is not None
    ]
    record_alert(
        postgres,
        "run_failure",
        "error",
        f"run {run.run_id[:8]} of job {run.job_name} failed",
        {"run_id": run.run_id, "job": run.job_name, "tags": dict(run.tags), "error": error, "steps": step_errors},
        dedup_key=f"run_failure:{run.run_id}",
    )
