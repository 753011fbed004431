"""``raw_trades_daily``: one UTC day of landed trades compacted into one Parquet object.

The landing sink writes many small hourly objects per partition
(``trades/date=D/hour=HH/<partition>-<first>-<last>.parquet``); this asset merges the day's
objects (and any batch-landed ``trades/date=D/<part>.parquet``) into
``compacted/trades/date=D/trades.parquet`` in the raw bucket, columns
``ts_ms, symbol, price, size, trade_id, partition, row`` sorted by partition then arrival
(``row`` = Kafka offset, stable within a message), which is exactly what the reconciliation
oracle needs to replay each partition's lateness. The object is read back and its row count and
content checksum verified before the asset reports success. Rerunning rewrites the same object
from the same sources (idempotent); the hourly objects are kept (they are the raw record).
"""

import hashlib

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from tickforge.defs.lib.frames import LandedTrades
from tickforge.defs.lib.keys import raw_trades_key
from tickforge.defs.lib.partitions import daily_partitions
from tickforge.defs.s3.resources import ObjectStoreResource
from tickforge.platform.io.raw_layout import LANDED_TRADES_SCHEMA, compacted_key, landed_trade_keys, read_landed_trades


def content_checksum(frame: pl.DataFrame) -> str:
    """SHA-256 over the frame's values in row order (independent of Parquet encoding)."""
    digest = hashlib.sha256()
    digest.update(",".join(f"{n}:{t}" for n, t in frame.schema.items()).encode())
    digest.update(frame.write_csv(include_header=False).encode())
    return digest.hexdigest()


@asset(
    name="raw_trades_daily",
    partitions_def=daily_partitions,
    deps=[raw_trades_key()],
    kinds={"s3", "parquet"},
    owners=["team:market-data"],
    group_name="raw",
    description="The day's landed trades (hourly sink objects and batch parts) compacted into "
    "one Parquet object `compacted/trades/date=YYYY-MM-DD/trades.parquet` (raw bucket), sorted "
    "by Kafka partition and arrival.",
)
def raw_trades_daily(context: AssetExecutionContext, object_store: ObjectStoreResource) -> MaterializeResult:
    day = context.partition_key
    keys = landed_trade_keys(object_store, day)
    trades = LandedTrades.validate(read_landed_trades(object_store, day, keys).select(list(LANDED_TRADES_SCHEMA)))
    key = compacted_key(day)
    size = object_store.write_parquet(object_store.raw_bucket, key, trades)
    back = object_store.read_parquet(object_store.raw_bucket, key).cast(LANDED_TRADES_SCHEMA)
    checksum = content_checksum(trades)
    if back.height != trades.height or content_checksum(back) != checksum:
        raise RuntimeError(f"{key}: read back {back.height} rows, wrote {trades.height}, checksums differ")
    per_partition = {str(p): n for p, n in trades.group_by("partition").len().sort("partition").iter_rows()}
    context.log.info("%s: %d objects -> %d rows in %s", day, len(keys), trades.height, key)
    return MaterializeResult(
        metadata={
            "source_objects": len(keys),
            "rows": trades.height,
            "symbols": trades["symbol"].n_unique() if trades.height else 0,
            "rows_per_partition": MetadataValue.json(per_partition),
            "bytes": size,
            "sha256": checksum,
            "uri": f"s3://{object_store.raw_bucket}/{key}",
        }
    )
