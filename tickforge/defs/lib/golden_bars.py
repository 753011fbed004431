"""Golden bars through the Dagster PostgreSQL resource, for the assets that load, check or trade them."""

from __future__ import annotations

import pandas as pd

from tickforge.defs.postgres.resources import PostgresResource
from tickforge.platform.io.postgres import golden_bars


def read_golden_bars(postgres: PostgresResource, timeframe: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    """The golden bars of a timeframe with ``start_ms <= window_start < end_ms`` (every stored
    column, ``closed_at_ms`` NaN where unknown), sorted by symbol and window."""
    with postgres.connect() as conn:
        return golden_bars(conn, postgres.schema_name, timeframe, start_ms, end_ms).to_pandas()
