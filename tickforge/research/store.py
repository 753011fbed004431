"""The research tables in PostgreSQL (the schema of the golden bars): what the picks, the research
page and the strategy runners read. The research room's IO edge: plain psycopg, no Dagster (the
research assets reach it through :mod:`tickforge.defs.research.store`; the kernels stay pure).

Each table is declared by its polars schema and key; it is created on first write. A writer owns
a slice of its table (a day, or the days up to one) and replaces it in one transaction (DELETE the
slice, COPY the rows), so a rerun leaves exactly what it computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from tickforge.research.engine import METRICS, RESULT_SCHEMA
from tickforge.research.scoring import PICK_SCHEMA, SCORECARD_SCHEMA

_PG_TYPES = {
    pl.Date: "date",
    pl.String: "text",
    pl.Float64: "double precision",
    pl.Int64: "bigint",
    pl.Int32: "integer",
    pl.Int8: "smallint",
    pl.Boolean: "boolean",
}
PICK_KEY = ("day", "symbol", "strategy", "timeframe", "params")


@dataclass(frozen=True)
class Table:
    name: str
    schema: Mapping[str, Any]  # column -> polars dtype
    key: tuple[str, ...]

    def ddl(self, pg_schema: str) -> sql.Composed:
        columns = [
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_PG_TYPES[t] + (" NOT NULL" if c in self.key else "")))
            for c, t in self.schema.items()
        ]
        columns.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, self.key))))
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            sql.Identifier(pg_schema, self.name), sql.SQL(", ").join(columns)
        )


SCORE_SCHEMA = {
    "day": pl.Date,
    **RESULT_SCHEMA,
    "n_trials": pl.Int64,
    "sharpe_max_expected": pl.Float64,
    "dsr": pl.Float64,
    "score": pl.Float64,
    "bucket": pl.String,
    "gate": pl.String,
}
STRATEGY_SCORES = Table(
    "strategy_scores", SCORE_SCHEMA, ("day", "symbol", "timeframe", "strategy", "params", "window", "sample")
)
NEXT_DAY_PICKS = Table("next_day_picks", PICK_SCHEMA, PICK_KEY)
PICK_EQUITY = Table(
    "pick_equity",
    {**{k: PICK_SCHEMA[k] for k in PICK_KEY}, "window_start": pl.Int64, "position": pl.Int8, "equity": pl.Float64},
    (*PICK_KEY, "window_start"),
)
PICKS_SCORECARD = Table("picks_scorecard", {**SCORECARD_SCHEMA, "as_of": pl.Date}, PICK_KEY)
TABLES = (STRATEGY_SCORES, NEXT_DAY_PICKS, PICK_EQUITY, PICKS_SCORECARD)
assert all(m in SCORE_SCHEMA for m in METRICS)


def replace_table(
    conn: psycopg.Connection, pg_schema: str, table: Table, frame: pl.DataFrame, where: str, params: Sequence[Any]
) -> int:
    """Delete the rows of ``table`` matching ``where`` (SQL over its columns, %s parameters) and
    COPY ``frame`` in, inside the caller's transaction; returns the rows deleted."""
    frame = frame.select(list(table.schema)).cast(pl.Schema(table.schema))
    target = sql.Identifier(pg_schema, table.name)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pg_schema)))
    conn.execute(table.ddl(pg_schema))
    deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE ").format(target) + sql.SQL(where), params).rowcount
    columns = sql.SQL(", ").join(map(sql.Identifier, table.schema))
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, columns)) as copy:
        for row in frame.iter_rows():
            copy.write_row(row)
    return max(deleted, 0)


def read_table(dsn: str, pg_schema: str, table: Table, where: str = "TRUE", params: Sequence[Any] = ()) -> pl.DataFrame:
    """The rows of ``table`` matching ``where``, in key order (empty when the table does not exist yet)."""
    query = (
        sql.SQL("SELECT {} FROM {} WHERE ").format(
            sql.SQL(", ").join(map(sql.Identifier, table.schema)),
            sql.Identifier(pg_schema, table.name),
        )
        + sql.SQL(where)
        + sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(map(sql.Identifier, table.key)))
    )
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            rows = conn.execute(query, params).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        rows = []
    return pl.DataFrame(rows, schema=dict(table.schema), orient="row")
