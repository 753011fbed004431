"""The dbt marts (``dbt_marts/``) as Dagster assets, each downstream of the Snowflake facts.

Targets (``dbt_marts/profiles.yml``, chosen with ``TICKFORGE_DBT_TARGET``):

* ``prod``: Snowflake itself (credentials from the ``TICKFORGE_SNOWFLAKE__*`` variables); the
  models read ``CORE.FACT_TICKS_60S`` / ``CORE.FACT_TICKS_300S`` / ``CORE.FACT_DEAD_LETTERS_1M``
  where the loaders wrote them.
* ``local`` (default): dbt-duckdb. The local Snowflake stand-in (fakesnow) keeps its DuckDB files
  open in the server process and DuckDB allows one writer process per file, so dbt cannot attach
  them. Instead the step copies the tables the models read (:data:`MART_SOURCES`) out of the
  stand-in, through the Snowflake connector, into ``CORE`` of a DuckDB file
  (``TICKFORGE_DBT_DUCKDB_PATH``, default ``<state_dir>/dbt/marts.duckdb``) and runs the same
  model SQL there.

The dbt manifest is produced by ``dbt parse`` when it is missing or older than the project's
models (the asset graph is read from it); ``DBT_SEND_ANONYMOUS_USAGE_STATS`` is forced off.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetSpec, BackfillPolicy
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_snowflake import SnowflakeResource

from tickforge.defs.lib.partitions import daily_partitions
from tickforge.defs.snowflake.dead_letter_facts import FACT_DEAD_LETTERS
from tickforge.defs.snowflake.warehouse import FACT_TABLES

DBT_PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_marts"
MARTS_GROUP = "marts"
# The Snowflake tables the dbt sources name (dbt_marts/models/marts/sources.yml).
MART_SOURCES = (*FACT_TABLES.values(), FACT_DEAD_LETTERS)
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")


def dbt_executable() -> str:
    """``dbt`` next to the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).with_name("dbt")
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")


def dbt_target() -> str:
    return os.environ.get("TICKFORGE_DBT_TARGET", "local")


def duckdb_path(state_dir: Path) -> Path:
    # Absolute: dbt runs inside dbt_marts/, where a relative state folder would point elsewhere.
    return Path(os.environ.get("TICKFORGE_DBT_DUCKDB_PATH", state_dir / "dbt" / "marts.duckdb")).resolve()


def manifest_is_stale(manifest: Path, project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """Missing, or older than a file it is parsed from: an edited model or source would
    otherwise keep its old lineage and tests in Dagster until someone deleted ``target/``."""
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    inputs = [project_dir / "dbt_project.yml", *(project_dir / "models").rglob("*")]
    return any(p.is_file() and p.stat().st_mtime > built for p in inputs)


def dbt_project() -> DbtProject:
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    if manifest_is_stale(project.manifest_path):
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        subprocess.run(
            [dbt_executable(), "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR),
             "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(project.target_path)],
            check=True, env=env, cwd=DBT_PROJECT_DIR, capture_output=True, timeout=120,
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
}


def fact_table_specs() -> list[AssetSpec]:
    """The tables the dbt sources name, written by the Snowflake loaders."""
    common: dict[str, Any] = {
        "kinds": {"snowflake"}, "owners": ["team:analytics-platform"], "group_name": "warehouse"
    }
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
    ]


class MartsTranslator(DagsterDbtTranslator):
    """Models as ``marts/<model>`` in group ``marts``; sources are the fact tables' assets."""

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
            spec = spec.merge_attributes(deps=sorted(loaders, key=lambda k: k.to_user_string()))
        return spec


def copy_facts_to_duckdb(snowflake: SnowflakeResource, path: Path) -> dict[str, int]:
    """The local target's input: the tables the models read, copied from the Snowflake stand-in."""
    import duckdb  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {}
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        frames = {}
        for fact in MART_SOURCES:
            frames[fact] = cur.execute(f"SELECT * FROM {snowflake.database}.{fact}").fetch_pandas_all()
    db = duckdb.connect(str(path))
    try:
        db.execute("CREATE SCHEMA IF NOT EXISTS CORE")
        for fact, frame in frames.items():
            db.register("facts_frame", frame)
            db.execute(f"CREATE OR REPLACE TABLE {fact} AS SELECT * FROM facts_frame")
            db.unregister("facts_frame")
            counts[fact] = len(frame)
    finally:
        db.close()
    return counts


def build_marts(state_dir: Path):
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
        target = dbt_target()
        if target == "local":
            path = duckdb_path(state_dir)
            counts = copy_facts_to_duckdb(snowflake, path)
            os.environ["TICKFORGE_DBT_DUCKDB_PATH"] = str(path)  # read by profiles.yml in the dbt process
            context.log.info("local target: facts copied to %s: %s", path, counts)
        # The marts are whole-table rebuilds over all loaded facts; the partition (the nightly
        # day whose facts were just loaded) only ties the run to the schedule.
        yield from dbt.cli(["build", "--target", target], context=context).stream()

    return dbt_marts
