"""The raw trade landing layout in object storage.

One UTC day of trades lives under ``s3://<raw_bucket>/trades/date=YYYY-MM-DD/`` as Parquet
objects with the canonical columns ``ts_ms, symbol, price, size, trade_id``, rows in arrival
(file) order, which the lateness rule depends on.
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl

from tickforge.platform.settings import Settings
from tickforge.resources import ObjectStoreResource, resources_for

TRADE_COLUMNS = ("ts_ms", "symbol", "price", "size", "trade_id")
RAW_TRADES_SCHEMA = pl.Schema(
    {"ts_ms": pl.Int64, "symbol": pl.String, "price": pl.Float64, "size": pl.Float64, "trade_id": pl.Int64}
)


def trades_prefix(day: str) -> str:
    return f"trades/date={day}/"


def _canonical(trades: pl.DataFrame) -> pl.DataFrame:
    frame = trades if "trade_id" in trades.columns else trades.with_columns(trade_id=pl.lit(None))
    return frame.select(
        [pl.col(name).cast(dtype) for name, dtype in RAW_TRADES_SCHEMA.items()]
    )


def land_trades(
    store: ObjectStoreResource, trades: pl.DataFrame, part: str = "part-00000"
) -> list[str]:
    """Write trades, split by UTC day of ``ts_ms``, one object per day; returns the keys.

    Rows keep their order. Writing the same ``part`` again replaces the object (idempotent).
    """
    frame = _canonical(trades).with_row_index("_order")
    day = pl.from_epoch(pl.col("ts_ms"), time_unit="ms").dt.strftime("%Y-%m-%d")
    keys = []
    for (date,), chunk in frame.with_columns(_day=day).group_by(["_day"], maintain_order=True):
        key = f"{trades_prefix(str(date))}{part}.parquet"
        store.write_parquet(store.raw_bucket, key, chunk.sort("_order").drop("_order", "_day"))
        keys.append(key)
    return keys


def land_trades_parquet(settings: Settings, trades_df: pl.DataFrame, part: str = "part-00000") -> list[str]:
    """:func:`land_trades` with the object store the settings describe."""
    return land_trades(resources_for(settings, env_secrets=False)["object_store"], trades_df, part)


def read_day_trades(store: ObjectStoreResource, day: str) -> pl.DataFrame:
    """All trades landed for one UTC day, objects in key order, rows in their order."""
    keys = [k for k in store.list_keys(store.raw_bucket, trades_prefix(day)) if k.endswith(".parquet")]
    frames = [_canonical(store.read_parquet(store.raw_bucket, key)) for key in keys]
    if not frames:
        return pl.DataFrame(schema=RAW_TRADES_SCHEMA)
    return pl.concat(frames)


def utc_day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
