"""The research job: the research assets of one daily partition, fanned out by strategy.

Each ``backtest_sweep/<strategy>`` is an asset of its own, so each is a step of its own: the
multiprocess executor here runs two at a time (one per core; each sweep is itself a parallel
numba kernel), and the steps after them wait for all. Steps hand data over through S3 and
PostgreSQL only, so the same job runs across machines by changing its executor, nothing else:

- Kubernetes (``dagster-k8s``): ``executor_def=k8s_job_executor.configured({"max_concurrent": 16,
  "step_k8s_config": {"container_config": {"resources": {"requests": {"cpu": "2"}}}}})``, with the
  run itself launched in a pod by ``K8sRunLauncher`` (``run_launcher`` in dagster.yaml): each
  strategy's sweep becomes a Kubernetes Job on whatever node has room.
- Celery (``dagster-celery``): ``executor_def=celery_executor.configured({"broker": "pyamqp://...",
  "backend": "rpc://"})`` and workers started on each machine with ``dagster-celery worker start
  -A dagster_celery.app``; each step is a Celery task (``celery_k8s_job_executor`` runs them as pods).

Both need every machine to reach the same PostgreSQL, S3 and Snowflake (the settings) and a
shared Dagster instance (PostgreSQL storage, as ``dagster.yaml`` already configures).

Why not a MultiPartitionsDefinition (date x strategy): Dagster refuses a job whose assets have
different partitions definitions, and the sweeps belong in the daily nightly job, after the
reconciliation and before the scores; one asset per strategy gives the same fan-out, a step and a
materialization per (day, strategy), with the daily partitions the rest of the job has.
"""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, multiprocess_executor

from tickforge.defs.research.assets import RESEARCH_GROUP

research_job = define_asset_job(
    "research",
    selection=AssetSelection.groups(RESEARCH_GROUP),
    executor_def=multiprocess_executor.configured({"max_concurrent": 2}),
    description="Sweeps (one step per strategy, in parallel) -> scores -> next-day picks -> scorecard, and "
    "the Snowflake loads, for one day; the nightly job runs the same assets after the reconciliation.",
)
