"""``bar_archive``: golden bars past retention moved from PostgreSQL to Parquet in the archive bucket.

For a day older than the retention (``retention_days``, default 100, measured from ``as_of``,
default today UTC), each timeframe's golden bars of that day go to
``s3://<archive_bucket>/bars/timeframe=<tf>/date=YYYY-MM-DD/bars.parquet``. One PostgreSQL
transaction per timeframe:

1. lock the day's rows (``SELECT ... FOR UPDATE``: the bar store cannot change them meanwhile),
2. merge them over what an earlier run archived (a late correction that reached PostgreSQL
   after the day was archived replaces its archived version; nothing archived is lost),
3. write the object, read it back, and verify its row count and content checksum,
4. only then delete exactly the locked keys, and commit.

A crash anywhere before the commit leaves the rows in PostgreSQL; the next run merges them with
the object again. Re-running an archived day finds no rows and verifies the object as it is.
Days inside the retention are skipped (the nightly run of a recent day archives nothing).
"""

import hashlib
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from tickforge.defs.lib.frames import StoredBars
from tickforge.defs.lib.keys import golden_bars_key
from tickforge.defs.lib.partitions import daily_partitions, day_bounds_ms
from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.s3.resources import ObjectStoreResource
from tickforge.platform.bars.timeframes import bar_timeframes
from tickforge.platform.io.postgres import BAR_SCHEMA, count_bars, delete_bars, golden_bars

DEFAULT_RETENTION_DAYS = 100
# An archived day has the golden table's columns and types.
ARCHIVE_SCHEMA = BAR_SCHEMA


class ArchiveConfig(Config):
    retention_days: int = Field(
        default=DEFAULT_RETENTION_DAYS, description="Golden bars younger than this stay in PostgreSQL"
    )
    as_of: str | None = Field(default=None, description="YYYY-MM-DD the retention is counted from (default: today UTC)")


def archive_key(timeframe: str, day: str) -> str:
    return f"bars/timeframe={timeframe}/date={day}/bars.parquet"


def bars_checksum(frame: pl.DataFrame) -> str:
    """SHA-256 of the bars' values, sorted by key (independent of Parquet encoding)."""
    ordered = frame.select(list(ARCHIVE_SCHEMA)).cast(ARCHIVE_SCHEMA).sort(["symbol", "window_start"])
    return hashlib.sha256(ordered.write_csv(include_header=False).encode()).hexdigest()


def is_past_retention(day: str, retention_days: int, as_of: str | None) -> bool:
    today = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    return (today - date.fromisoformat(day)).days > retention_days


def _exists(store: ObjectStoreResource, key: str) -> bool:
    return key in store.list_keys(store.archive_bucket, key)


def archive_timeframe(
    postgres: PostgresResource, store: ObjectStoreResource, timeframe: str, day: str
) -> dict[str, Any]:
    """Archive one timeframe of one day (see module doc); returns what was done."""
    start_ms, end_ms = day_bounds_ms(day)
    key = archive_key(timeframe, day)
    with postgres.connect() as conn:
        fresh = golden_bars(conn, postgres.schema_name, timeframe, start_ms, end_ms, lock=True)
        existing = store.read_parquet(store.archive_bucket, key).cast(ARCHIVE_SCHEMA) if _exists(store, key) else None
        if fresh.is_empty():
            if existing is None:
                return {"archived": 0, "deleted": 0, "rows": 0, "object": None}
            return {
                "archived": 0,
                "deleted": 0,
                "rows": existing.height,
                "object": key,
                "sha256": bars_checksum(existing),
            }
        merged = (
            fresh
            if existing is None
            else pl.concat([fresh, existing]).unique(["symbol", "window_start"], keep="first", maintain_order=True)
        )
        merged = StoredBars.validate(merged.sort(["symbol", "window_start"]))
        checksum = bars_checksum(merged)
        store.write_parquet(store.archive_bucket, key, merged)
        back = store.read_parquet(store.archive_bucket, key).cast(ARCHIVE_SCHEMA)
        if back.height != merged.height or bars_checksum(back) != checksum:
            raise RuntimeError(f"{key}: verification failed ({back.height} rows read, {merged.height} written)")
        deleted = delete_bars(
            conn, postgres.schema_name, timeframe, fresh["symbol"].to_list(), fresh["window_start"].to_list()
        )
        if deleted != fresh.height:
            raise RuntimeError(f"{timeframe} {day}: deleted {deleted} of {fresh.height} locked rows")
        conn.commit()
    return {"archived": fresh.height, "deleted": deleted, "rows": merged.height, "object": key, "sha256": checksum}


def build_bar_archive(timeframes: list[str]):
    frames = bar_timeframes(timeframes)

    @asset(
        name="bar_archive",
        partitions_def=daily_partitions,
        deps=[AssetKey("snowflake_bar_facts"), AssetKey("bar_reconciliation"), *(golden_bars_key(tf) for tf in frames)],
        kinds={"s3", "parquet", "postgres"},
        owners=["team:market-data"],
        group_name="archive",
        description="Golden bars of a day older than the retention (default 100 days): written to "
        "`bars/timeframe=<tf>/date=<day>/bars.parquet` in the archive bucket, verified (row count "
        "and content checksum read back), then deleted from PostgreSQL. Safe to re-run.",
        metadata={"timeframes": frames, "default_retention_days": DEFAULT_RETENTION_DAYS},
    )
    def bar_archive(
        context: AssetExecutionContext,
        config: ArchiveConfig,
        postgres: PostgresResource,
        object_store: ObjectStoreResource,
    ) -> MaterializeResult:
        day = context.partition_key
        if not is_past_retention(day, config.retention_days, config.as_of):
            context.log.info("%s is within the %d-day retention: nothing to archive", day, config.retention_days)
            return MaterializeResult(
                metadata={"archived": 0, "within_retention": True, "retention_days": config.retention_days}
            )
        done = {tf: archive_timeframe(postgres, object_store, tf, day) for tf in frames}
        context.log.info("%s archived: %s", day, done)
        return MaterializeResult(
            metadata={
                "within_retention": False,
                "retention_days": config.retention_days,
                "archived": sum(d["archived"] for d in done.values()),
                "deleted": sum(d["deleted"] for d in done.values()),
                **{f"rows_{tf}": d["rows"] for tf, d in done.items()},
                "objects": MetadataValue.json({tf: d for tf, d in done.items()}),
            }
        )

    @asset_check(
        asset=bar_archive,
        name="archive_verified",
        description="For an archived day: every timeframe with archived bars has its object, the "
        "object's row count and checksum match the materialization, and PostgreSQL holds none of "
        "the day's bars any more.",
    )
    def archive_verified(
        context: AssetCheckExecutionContext, postgres: PostgresResource, object_store: ObjectStoreResource
    ) -> AssetCheckResult:
        day = context.partition_key
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("bar_archive"), asset_partitions=[day]), limit=1, ascending=False
        ).records
        meta = records[0].asset_materialization.metadata if records and records[0].asset_materialization else {}
        if meta.get("within_retention") is None or meta["within_retention"].value:
            return AssetCheckResult(passed=True, metadata={"day": day, "archived": "not yet (within retention)"})
        objects = meta["objects"].value
        start_ms, end_ms = day_bounds_ms(day)
        problems: list[str] = []
        with postgres.connect() as conn:
            for tf in frames:
                left = count_bars(conn, postgres.schema_name, tf, start_ms, end_ms)
                if left:
                    problems.append(f"{tf}: {left} bars still in PostgreSQL")
                info = objects.get(tf, {})
                if info.get("object"):
                    back = object_store.read_parquet(object_store.archive_bucket, info["object"])
                    if back.height != info["rows"] or bars_checksum(back) != info["sha256"]:
                        problems.append(f"{tf}: object differs from what was verified at archive time")
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            metadata={"day": day, "problems": MetadataValue.json(problems)},
        )

    return bar_archive, archive_verified
