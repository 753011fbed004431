"""The dbt marts (``dbt_marts/``) as Dagster assets: views in schema ``MART`` of the Snowflake
database the loaders write, each downstream of its tables' loaders.

dbt-snowflake runs on both targets of ``dbt_marts/profiles.yml``: ``local`` is the local stack's
Snowflake endpoint (fakesnow's server, when the Snowflake resource names a host), ``prod`` a
Snowflake account; ``TICKFORGE_DBT_TARGET`` overrides the choice. The dbt process gets the
resource's endpoint and credentials as the ``TICKFORGE_SNOWFLAKE__*`` variables profiles.yml
reads, so it writes into the database the loaders wrote, whatever the environment holds.

The dead-letter reasons reach dbt from :class:`~tickforge.platform.reasons.Reason` itself: every
dbt command here passes :func:`dbt_vars` with ``--vars`` (the copy in ``dbt_project.yml`` serves a
dbt run by hand, and a unit test keeps it equal). The source tests (the reasons in
``CORE.FACT_DEAD_LETTERS_1M`` are the vocabulary's) are checks of the fact tables' assets.

The dbt manifest is produced by ``dbt parse`` when it is missing or older than the project's
models and macros (the asset graph is read from it); ``DBT_SEND_ANONYMOUS_USAGE_STATS`` is forced off.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, AssetSpec, BackfillPolicy
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets
from dagster_snowflake import SnowflakeResource

from tickforge.defs.lib.partitions import daily_partitions
from tickforge.defs.research.warehouse import SNOWFLAKE_NEXT_DAY_PICKS
from tickforge.defs.snowflake.dead_letter_facts import FACT_DEAD_LETTERS
from tickforge.defs.snowflake.warehouse import FACT_TABLES
from tickforge.platform.contracts import UNREADABLE_DEAD_LETTER
from tickforge.platform.reasons import Reason

DBT_PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_marts"
MARTS_GROUP = "marts"
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")


def dbt_executable() -> str:
    """``dbt`` next to the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).with_name("dbt")
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")


def dbt_vars() -> dict[str, list[str] | str]:
    """The project's ``vars`` as dbt takes them from Python: the dead-letter reasons (``Reason``'s
    values, in its order) and the reason the topic's readers count a non-DeadLetter under."""
    return {"dead_letter_reasons": [r.value for r in Reason], "unreadable_dead_letter": UNREADABLE_DEAD_LETTER}


def vars_args() -> list[str]:
    """``--vars`` with :func:`dbt_vars` (JSON is YAML), for any dbt command over the project."""
    return ["--vars", json.dumps(dbt_vars())]


def profile_env(snowflake: SnowflakeResource) -> dict[str, str]:
    """The ``TICKFORGE_SNOWFLAKE__*`` variables profiles.yml reads, from the Snowflake resource
    (the local endpoint's host, port and protocol ride in its additional connection arguments),
    and ``TICKFORGE_DBT_TARGET``: as set, else ``local`` for an endpoint with a host, else ``prod``."""
    extra = snowflake.additional_snowflake_connection_args or {}
    values = {
        "account": snowflake.account,
        "user": snowflake.user,
        "password": snowflake.password,
        "database": snowflake.database,
        "warehouse": snowflake.warehouse,
        "role": snowflake.role,
        "host": extra.get("host"),
        "port": extra.get("port"),
        "protocol": extra.get("protocol"),
    }
    env = {f"TICKFORGE_SNOWFLAKE__{key.upper()}": str(value) for key, value in values.items() if value is not None}
    env["TICKFORGE_DBT_TARGET"] = os.environ.get("TICKFORGE_DBT_TARGET") or ("local" if extra.get("host") else "prod")
    return env


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` while the block runs (the dbt CLI resource starts dbt with a
    copy of it and takes no environment of its own), the previous values back afterwards."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def manifest_is_stale(manifest: Path, project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """Missing, or older than a file it is parsed from: an edited model, macro or source would
    otherwise keep its old lineage and tests in Dagster until someone deleted ``target/``."""
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    inputs = [
        project_dir / "dbt_project.yml",
        *(project_dir / "models").rglob("*"),
        *(project_dir / "macros").rglob("*"),
    ]
    return any(p.is_file() and p.stat().st_mtime > built for p in inputs)


def dbt_project() -> DbtProject:
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    if manifest_is_stale(project.manifest_path):
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        subprocess.run(
            [
                dbt_executable(),
                "parse",
                "--quiet",
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(project.target_path),
                *vars_args(),
            ],
            check=True,
            env=env,
            cwd=DBT_PROJECT_DIR,
            capture_output=True,
            timeout=120,
        )
    return project


def fact_table_key(fact: str) -> AssetKey:
    """``CORE.FACT_TICKS_60S`` -> ``snowflake/core/fact_ticks_60s``."""
    schema, table = fact.lower().split(".")
    return AssetKey(["snowflake", schema, table])


# The daily loader of each source table. A model depends on its tables' loaders directly: the
# tables in between are specs, which order nothing, and in the nightly job dbt must run after
# the loads.
DAILY_LOADERS: dict[AssetKey, AssetKey] = {
    **{fact_table_key(fact): AssetKey("snowflake_bar_facts") for fact in FACT_TABLES.values()},
    fact_table_key(FACT_DEAD_LETTERS): AssetKey("snowflake_dead_letter_facts"),
    fact_table_key(SNOWFLAKE_NEXT_DAY_PICKS): AssetKey("snowflake_next_day_picks"),
}


def fact_table_specs() -> list[AssetSpec]:
    """The tables the dbt sources name, written by the Snowflake loaders."""
    common: dict[str, Any] = {"kinds": {"snowflake"}, "owners": ["team:analytics-platform"], "group_name": "warehouse"}
    return [
        *(
            AssetSpec(
                fact_table_key(fact),
                description=f"`{fact}`: golden {tf} bars, upserted by `snowflake_bar_facts` (daily) and "
                "`snowflake_window_facts` (5-minute windows).",
                deps=[AssetKey("snowflake_bar_facts"), AssetKey("snowflake_window_facts")],
                **common,
            )
            for tf, fact in FACT_TABLES.items()
        ),
        AssetSpec(
            fact_table_key(FACT_DEAD_LETTERS),
            description=f"`{FACT_DEAD_LETTERS}`: dead letters per minute, reason, symbol and source, "
            "replaced a UTC day at a time by `snowflake_dead_letter_facts`.",
            deps=[AssetKey("snowflake_dead_letter_facts")],
            **common,
        ),
        AssetSpec(
            fact_table_key(SNOWFLAKE_NEXT_DAY_PICKS),
            description=f"`{SNOWFLAKE_NEXT_DAY_PICKS}`: the research picks, replaced a pick day at a time by "
            "`snowflake_next_day_picks`.",
            deps=[AssetKey("snowflake_next_day_picks")],
            **common,
        ),
    ]


class MartsTranslator(DagsterDbtTranslator):
    """Models as ``marts/<model>`` in group ``marts``; sources are the fact tables' assets, and
    their tests checks of those assets."""

    def __init__(self) -> None:
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_source_tests_as_checks=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return fact_table_key(f"{dbt_resource_props['schema']}.{dbt_resource_props['identifier']}")
        return AssetKey(["marts", dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return MARTS_GROUP

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: Any) -> AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("model."):
            loaders = {DAILY_LOADERS[d.asset_key] for d in spec.deps if d.asset_key in DAILY_LOADERS}
            ordered: list[AssetKey] = sorted(loaders, key=AssetKey.to_user_string)
            spec = spec.merge_attributes(deps=ordered)
        return spec


def build_marts() -> AssetsDefinition:
    project = dbt_project()

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=MartsTranslator(),
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.multi_run(1),  # as the other nightly assets: a run per day
        name="dbt_marts",
    )
    def dbt_marts(context: AssetExecutionContext, dbt: DbtCliResource, snowflake: SnowflakeResource) -> Iterator[Any]:
        env = profile_env(snowflake)
        target = env["TICKFORGE_DBT_TARGET"]
        context.log.info("dbt target %s: database %s", target, snowflake.database)
        # The marts are views over all loaded facts; the partition (the nightly day whose facts
        # were just loaded) only ties the run to the schedule. dbt starts inside cli().
        with environment(env):
            invocation = dbt.cli(["build", "--target", target, *vars_args()], context=context)
        yield from invocation.stream()

    return dbt_marts
