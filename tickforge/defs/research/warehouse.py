"""The research loads into Snowflake: ``CORE.FACT_BACKTEST_RESULTS`` (the scored sweep rows of a
pick day) and ``CORE.NEXT_DAY_PICKS``, from their PostgreSQL tables.

DDL is ``snowflake/ddl/060_research.sql``, applied with the rest on every load; a pick day is
replaced in one transaction (:func:`~tickforge.defs.lib.snowflake.replace_slice`), and the check in
the same step compares the day's Snowflake rows with PostgreSQL's.
"""

from collections.abc import Sequence
from datetime import date

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    asset,
)
from dagster_snowflake import SnowflakeResource

from tickforge.defs.lib.partitions import daily_partitions
from tickforge.defs.lib.snowflake import ddl_statements, replace_slice
from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.research.assets import OWNERS, PICKS_KEY, RESEARCH_GROUP, SCORES_KEY, pick_day
from tickforge.defs.research.store import read_rows
from tickforge.research.store import NEXT_DAY_PICKS, STRATEGY_SCORES, Table

_SF_TYPES: dict[pl.DataType | type[pl.DataType], str] = {
    pl.Date: "DATE",
    pl.String: "VARCHAR",
    pl.Float64: "FLOAT",
    pl.Int64: "NUMBER(38, 0)",
}
FACT_BACKTEST_RESULTS = "CORE.FACT_BACKTEST_RESULTS"
SNOWFLAKE_NEXT_DAY_PICKS = "CORE.NEXT_DAY_PICKS"
RESULT_COLUMNS = (
    "day",
    "symbol",
    "timeframe",
    "strategy",
    "params",
    "period_start",
    "period_end",
    "n_bars",
    "n_trades",
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "exposure",
    "turnover",
    "avg_holding_bars",
    "stability",
    "n_trials",
    "dsr",
    "score",
    "bucket",
    "gate",
)


def load_day(
    snowflake: SnowflakeResource, target: str, source: pl.DataFrame, columns: Sequence[str], day: date
) -> dict[str, int]:
    """Replace the pick day's rows of ``target`` with ``source``; (deleted, inserted, rows now)."""
    types = [_SF_TYPES[source.schema[c]] for c in columns]
    rows = source.select(columns).with_columns(pl.col("day").cast(pl.String)).rows()
    if not snowflake.database:
        raise ValueError("the Snowflake resource names no database")
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        for statement in ddl_statements(snowflake.database):
            cur.execute(statement)
        deleted = replace_slice(
            cur, target, f"DAY = '{day.isoformat()}'", [c.upper() for c in columns], types, [list(r) for r in rows]
        )
        loaded = day_rows(cur, target, day)
    return {"deleted": deleted, "inserted": len(rows), "rows": loaded}


def day_rows(cur, target: str, day: date) -> int:  # a connector cursor
    return int(cur.execute(f"SELECT COUNT(*) FROM {target} WHERE DAY = '{day.isoformat()}'").fetchone()[0])


def _load_asset(
    name: str, upstream: AssetKey, table: Table, target: str, columns: Sequence[str], check: str, what: str
) -> AssetsDefinition:
    @asset(
        name=name,
        partitions_def=daily_partitions,
        deps=[upstream],
        kinds={"snowflake", "python"},
        owners=OWNERS,
        group_name=RESEARCH_GROUP,
        description=f"{what} of the pick day in `{target}`, replaced in one transaction from PostgreSQL "
        f"`{table.name}`.",
        metadata={"table": target},
        check_specs=[
            AssetCheckSpec(
                check,
                asset=name,
                description=f"The pick day's `{target}` rows equal PostgreSQL `{table.name}`'s, key for key.",
            )
        ],
    )
    def _load(
        context: AssetExecutionContext, postgres: PostgresResource, snowflake: SnowflakeResource
    ) -> MaterializeResult:
        day = pick_day(context.partition_key)
        source = read_rows(postgres, table, '"day" = %s', [day])
        counts = load_day(snowflake, target, source, columns, day)
        keys = ", ".join(c.upper() for c in table.key if c in columns)
        with snowflake.get_connection() as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT {keys} FROM {target} WHERE DAY = '{day.isoformat()}' ORDER BY {keys}")
            loaded = cur.fetchall()
        expected = (
            source.select([c for c in table.key if c in columns]).with_columns(pl.col("day").cast(pl.String)).rows()
        )
        got = [tuple(str(v) if i == 0 else v for i, v in enumerate(r)) for r in loaded]
        result = AssetCheckResult(
            check_name=check,
            passed=sorted(got) == sorted(expected),
            severity=AssetCheckSeverity.ERROR,
            metadata={"postgres_rows": len(expected), "snowflake_rows": len(got)},
        )
        return MaterializeResult(metadata={"pick_day": str(day), **counts}, check_results=[result])

    return _load


snowflake_backtest_results = _load_asset(
    "snowflake_backtest_results",
    SCORES_KEY,
    STRATEGY_SCORES,
    FACT_BACKTEST_RESULTS,
    RESULT_COLUMNS,
    "backtest_results_match_scores",
    "Every scored sweep row",
)
snowflake_next_day_picks = _load_asset(
    "snowflake_next_day_picks",
    PICKS_KEY,
    NEXT_DAY_PICKS,
    SNOWFLAKE_NEXT_DAY_PICKS,
    (
        "day",
        "symbol",
        "strategy",
        "timeframe",
        "params",
        "bucket",
        "weight",
        "score",
        "dsr",
        "sharpe",
        "total_return",
        "max_drawdown",
        "period_start",
        "period_end",
    ),
    "snowflake_picks_match_postgres",
    "The picks",
)
