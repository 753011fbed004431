"""The live view's history: the golden bars the bar store has made durable in PostgreSQL, read
through the golden-bar store (:mod:`tickforge.platform.io.postgres`)."""

from __future__ import annotations

import polars as pl
import psycopg

from tickforge.dashboard.cache import bars_frame
from tickforge.platform.io.postgres import bar_symbols, latest_bars
from tickforge.platform.settings import Settings

# What a database without the golden tables (nothing stored yet) raises.
_NOT_YET = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)


class History:
    """Golden bars from PostgreSQL (what the bar store has made durable)."""

    def __init__(self, settings: Settings) -> None:
        self.dsn = settings.postgres.dsn.get_secret_value()
        self.schema = settings.postgres.schema_name

    def bars(self, symbol: str, timeframe: str, limit: int, since_ms: int | None = None) -> pl.DataFrame:
        """A symbol's latest ``limit`` golden bars (from ``since_ms`` on), oldest first."""
        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                return latest_bars(conn, self.schema, timeframe, symbol, limit, since_ms)
        except _NOT_YET:
            return bars_frame([])

    def symbols(self) -> list[str]:
        """The symbols with golden 1 m bars."""
        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                return bar_symbols(conn, self.schema, "1m")
        except _NOT_YET:
            return []
