"""Golden bars read from PostgreSQL for the assets that load, check or trade them."""

from __future__ import annotations

import pandas as pd
from psycopg import sql

from tickforge.defs.postgres.resources import PostgresResource
from tickforge.platform.bars.reference import BAR_COLUMNS
from tickforge.platform.io.postgres import bar_table


def read_golden_bars(
    postgres: PostgresResource, timeframe: str, start_ms: int, end_ms: int
) -> pd.DataFrame:
    """The golden bars of a timeframe with ``start_ms <= window_start < end_ms``."""
    query = sql.SQL(
        "SELECT {cols} FROM {table} WHERE window_start >= %s AND window_start < %s "
        "ORDER BY symbol, window_start"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in BAR_COLUMNS),
        table=sql.Identifier(postgres.schema_name, bar_table(timeframe)),
    )
    with postgres.connect() as conn:
        rows = conn.execute(query, (start_ms, end_ms)).fetchall()
    frame = pd.DataFrame(rows, columns=list(BAR_COLUMNS))
    types = {c: "float64" for c in BAR_COLUMNS} | {
        "symbol": "object", "window_start": "int64", "window_end": "int64", "trade_count": "int64"
    }
    return frame.astype(types)
