"""The raw trade and quote layout in object storage: object keys, landing and reading.

One UTC day of trades lives under ``s3://<raw_bucket>/trades/date=YYYY-MM-DD/`` as Parquet
objects with the canonical columns ``ts_ms, symbol, price, size, trade_id``, rows in arrival
(file) order, which the lateness rule depends on. Two producers write there:

* the raw landing sink (:mod:`tickforge.streaming.raw_sink`): :func:`object_key`,
  ``hour=HH/<partition>-<first offset>-<last offset>.parquet`` with ``row`` = the Kafka offset;
  arrival order is per Kafka partition (offset order, then order within a message); quotes the
  same under ``quotes/``;
* :func:`land_trades` (files landed in batch): ``<part>.parquet`` directly under the day, rows in
  file order, read as partition 0.

:func:`read_landed_trades` merges both into one frame with ``partition`` and ``row`` columns,
sorted by (partition, arrival); ``raw_trades_daily`` compacts that into one object per day
(:func:`compacted_key`), which is what reconciliation reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

import polars as pl

TRADE_COLUMNS = ("ts_ms", "symbol", "price", "size", "trade_id")
RAW_TRADES_SCHEMA = pl.Schema(
    {"ts_ms": pl.Int64, "symbol": pl.String, "price": pl.Float64, "size": pl.Float64, "trade_id": pl.Int64}
)
LANDED_TRADES_SCHEMA = pl.Schema({**dict(RAW_TRADES_SCHEMA), "partition": pl.Int32(), "row": pl.Int64()})


class RawStore(Protocol):
    """The object store the raw layout lives in (``ObjectStoreResource`` is one)."""

    @property
    def raw_bucket(self) -> str: ...

    def list_keys(self, bucket: str, prefix: str) -> list[str]: ...

    def write_parquet(self, bucket: str, key: str, frame: pl.DataFrame) -> int: ...

    def read_parquet(self, bucket: str, key: str) -> pl.DataFrame: ...


def object_key(kind: str, day: str, hour: int, partition: int, first: int, last: int) -> str:
    """A landing sink object; partition and offsets zero padded so key order is offset order."""
    return f"{kind}/date={day}/hour={hour:02d}/{partition:04d}-{first:020d}-{last:020d}.parquet"


def parse_object_key(key: str) -> tuple[int, int, int] | None:
    """``(partition, first_offset, last_offset)`` of a sink object key, None for other keys."""
    name = key.rsplit("/", 1)[-1].removesuffix(".parquet")
    parts = name.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def trades_prefix(day: str) -> str:
    return f"trades/date={day}/"


def compacted_key(day: str) -> str:
    """The day's compacted trades (``raw_trades_daily``), in the raw bucket."""
    return f"compacted/trades/date={day}/trades.parquet"


def utc_day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _canonical(trades: pl.DataFrame) -> pl.DataFrame:
    frame = trades if "trade_id" in trades.columns else trades.with_columns(trade_id=pl.lit(None))
    return frame.select([pl.col(name).cast(dtype) for name, dtype in RAW_TRADES_SCHEMA.items()])


def land_trades(store: RawStore, trades: pl.DataFrame, part: str = "part-00000") -> list[str]:
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


def _object_order(key: str) -> tuple[int, int, str]:
    parsed = parse_object_key(key)
    return (0, 0, key) if parsed is None else (parsed[0], parsed[1], key)


def landed_trade_keys(store: RawStore, day: str) -> list[str]:
    """The day's landed trade objects (sink hours and batch parts), in arrival order per partition."""
    keys = [k for k in store.list_keys(store.raw_bucket, trades_prefix(day)) if k.endswith(".parquet")]
    return sorted(keys, key=_object_order)


def read_landed_trades(store: RawStore, day: str, keys: list[str] | None = None) -> pl.DataFrame:
    """All trades landed for one UTC day with ``partition`` and ``row`` (arrival order within a
    partition), sorted by partition then arrival. Batch-landed parts are partition 0 with ``row``
    their position in key order."""
    frames = []
    position = 0
    for key in landed_trade_keys(store, day) if keys is None else keys:
        raw = store.read_parquet(store.raw_bucket, key)
        parsed = parse_object_key(key)
        frame = _canonical(raw)
        if parsed is not None and "row" in raw.columns:
            frame = frame.with_columns(partition=pl.lit(parsed[0], pl.Int32), row=raw["row"].cast(pl.Int64))
        else:
            frame = frame.with_columns(
                partition=pl.lit(0, pl.Int32), row=pl.int_range(position, position + raw.height, dtype=pl.Int64)
            )
            position += raw.height
        frames.append(frame)
    if not frames:
        return pl.DataFrame(schema=LANDED_TRADES_SCHEMA)
    # Stable: rows of one message (same offset) keep their order.
    return pl.concat(frames).sort(["partition", "row"], maintain_order=True)


def read_day_trades(store: RawStore, day: str) -> pl.DataFrame:
    """The day's trades for reconciliation: the compacted object when ``raw_trades_daily`` wrote
    it, else the landed objects; columns of :data:`LANDED_TRADES_SCHEMA`."""
    if store.list_keys(store.raw_bucket, compacted_key(day)):
        return store.read_parquet(store.raw_bucket, compacted_key(day)).cast(LANDED_TRADES_SCHEMA)
    return read_landed_trades(store, day)
