"""The live view's history: the golden bars the bar store has made durable in PostgreSQL."""

from __future__ import annotations

import polars as pl
import psycopg
from psycopg import sql

from tickforge.dashboard.cache import bars_frame
from tickforge.platform.io.postgres import BAR_COLUMNS, bar_table
from tickforge.platform.settings import Settings


class History:
    """Golden bars from PostgreSQL (what the bar store has made durable)."""

    def __init__(self, settings: Settings) -> None:
        self.dsn = settings.postgres.dsn.get_secret_value()
        self.schema = settings.postgres.schema_name

    def bars(self, symbol: str, timeframe: str, limit: int, since_ms: int | None = None) -> pl.DataFrame:
        query = sql.SQL(
            "SELECT {cols} FROM {table} WHERE symbol = %s AND window_start >= %s "
            "ORDER BY window_start DESC LIMIT %s"
        ).format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in BAR_COLUMNS),
            table=sql.Identifier(self.schema, bar_table(timeframe)),
        )
        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                rows = conn.execute(query, (symbol, since_ms if since_ms is not None else -(2**62), limit)).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return bars_frame([])
        return bars_frame([dict(zip(BAR_COLUMNS, row, strict=True)) for row in reversed(rows)])

    def symbols(self) -> list[str]:
        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                rows = conn.execute(
                    sql.SQL("SELECT DISTINCT symbol FROM {}").format(sql.Identifier(self.schema, "bars_1m"))
                ).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            return []
        return sorted(r[0] for r in rows)
