"""The research tables through the Dagster PostgreSQL resource: the assets' side of
:mod:`tickforge.research.store` (which holds the tables and the plain IO)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from tickforge.research.store import Table, read_table, replace_table

if TYPE_CHECKING:  # the dashboard reads these tables without importing Dagster
    from tickforge.defs.postgres.resources import PostgresResource


def replace_rows(
    postgres: PostgresResource, table: Table, frame: pl.DataFrame, where: str, params: Sequence[Any]
) -> int:
    """Delete the rows of ``table`` matching ``where`` and COPY ``frame`` in, in one transaction;
    returns the rows deleted."""
    with postgres.connect() as conn:
        return replace_table(conn, postgres.schema_name, table, frame, where, params)


def read_rows(
    postgres: PostgresResource, table: Table, where: str = "TRUE", params: Sequence[Any] = ()
) -> pl.DataFrame:
    """The rows of ``table`` matching ``where``, in key order (empty when the table does not exist yet)."""
    return read_table(postgres.dsn, postgres.schema_name, table, where, params)
