"""``snowflake_raw_ticks``: the day's compacted raw trades loaded into Snowflake ``RAW.TICKS``.

Source: ``raw_trades_daily``'s object ``compacted/trades/date=D/trades.parquet`` (raw bucket).
Every row carries its load metadata (``SOURCE_OBJECT_KEY``, ``SOURCE_CHECKSUM`` = the content
checksum :func:`~tickforge.defs.s3.compaction.content_checksum` of the object as read,
``LOADED_AT``). The load is idempotent: if the day's rows already carry this checksum and the
object's row count, nothing is written; otherwise one transaction deletes the day's rows and
inserts the object's (:func:`~tickforge.defs.lib.snowflake.replace_slice`). The asset
check compares the day's rows and checksums in ``RAW.TICKS`` with the object's.
"""

from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    asset,
)
from dagster_snowflake import SnowflakeResource

from tickforge.defs.lib.frames import LandedTrades
from tickforge.defs.lib.partitions import daily_partitions
from tickforge.defs.lib.snowflake import ddl_statements, replace_slice
from tickforge.defs.s3.compaction import content_checksum
from tickforge.defs.s3.resources import ObjectStoreResource
from tickforge.platform.io.raw_layout import LANDED_TRADES_SCHEMA, compacted_key

RAW_TICKS = "RAW.TICKS"
TICK_COLUMNS = (
    "TRADE_DATE",
    "TS_MS",
    "SYMBOL",
    "PRICE",
    "SIZE",
    "TRADE_ID",
    "KAFKA_PARTITION",
    "KAFKA_OFFSET",
    "SOURCE_OBJECT_KEY",
    "SOURCE_CHECKSUM",
)
RAW_TICKS_CHECK = "raw_ticks_match_compacted"


def read_compacted(object_store: ObjectStoreResource, day: str) -> tuple[str, pl.DataFrame, str]:
    """(key, trades, content checksum) of the day's compacted object."""
    key = compacted_key(day)
    trades = LandedTrades.validate(object_store.read_parquet(object_store.raw_bucket, key).cast(LANDED_TRADES_SCHEMA))
    return key, trades, content_checksum(trades)


def loaded_day(cur: Any, day: str) -> tuple[int, list[str], list[str]]:
    """(rows, distinct checksums, distinct source keys) of the day's rows in RAW.TICKS."""
    rows = cur.execute(f"SELECT COUNT(*) FROM {RAW_TICKS} WHERE TRADE_DATE = '{day}'").fetchone()[0]
    sums = cur.execute(
        f"SELECT DISTINCT SOURCE_CHECKSUM, SOURCE_OBJECT_KEY FROM {RAW_TICKS} WHERE TRADE_DATE = '{day}'"
    ).fetchall()
    return int(rows), sorted({s for s, _ in sums}), sorted({k for _, k in sums})


def is_loaded(state: tuple[int, list[str], list[str]], rows: int, key: str, checksum: str) -> bool:
    """The day's rows are exactly the object's: its count, and (if any) only its key and checksum."""
    expected = (rows, [checksum], [key]) if rows else (0, [], [])
    return state == expected


def tick_rows(day: str, key: str, checksum: str, trades: pl.DataFrame) -> list[list[Any]]:
    n = trades.height
    columns = [
        [day] * n,
        *(trades[c].to_list() for c in ("ts_ms", "symbol", "price", "size", "trade_id", "partition", "row")),
        [key] * n,
        [checksum] * n,
    ]
    return [list(row) for row in zip(*columns, strict=True)]


def load_raw_ticks(
    log: Any, snowflake: SnowflakeResource, day: str, key: str, trades: pl.DataFrame, checksum: str
) -> dict[str, Any]:
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        for statement in ddl_statements(snowflake.database):
            cur.execute(statement)
        if is_loaded(loaded_day(cur, day), trades.height, key, checksum) and trades.height:
            log.info("%s: RAW.TICKS already holds %s (%d rows, %s)", day, key, trades.height, checksum[:12])
            return {"deleted": 0, "inserted": 0, "changed": 0}
        types = (
            "DATE",
            "NUMBER(38, 0)",
            "VARCHAR",
            "FLOAT",
            "FLOAT",
            "NUMBER(38, 0)",
            "NUMBER(38, 0)",
            "NUMBER(38, 0)",
            "VARCHAR",
            "VARCHAR",
        )
        deleted = replace_slice(
            cur, RAW_TICKS, f"TRADE_DATE = '{day}'", TICK_COLUMNS, types, tick_rows(day, key, checksum, trades)
        )
    log.info("%s: RAW.TICKS replaced %d rows with %d from %s", day, deleted, trades.height, key)
    return {"deleted": deleted, "inserted": trades.height, "changed": deleted + trades.height}


@asset(
    partitions_def=daily_partitions,
    deps=[AssetKey("raw_trades_daily")],
    kinds={"snowflake", "python"},
    owners=["team:analytics-platform"],
    group_name="warehouse",
    description="Provenance load of the day's compacted raw trades into RAW.TICKS, each row "
    "tagged with its source object key, the object's content checksum and LOADED_AT; "
    "a day is replaced in one transaction, and skipped when already loaded from the same content.",
    metadata={"table": RAW_TICKS},
    check_specs=[
        AssetCheckSpec(
            RAW_TICKS_CHECK,
            asset="snowflake_raw_ticks",
            description="The day's RAW.TICKS rows equal the compacted object's row count, all from "
            "that object and checksum.",
        )
    ],
)
def snowflake_raw_ticks(
    context: AssetExecutionContext, object_store: ObjectStoreResource, snowflake: SnowflakeResource
) -> MaterializeResult:
    day = context.partition_key
    key, trades, checksum = read_compacted(object_store, day)
    counts = load_raw_ticks(context.log, snowflake, day, key, trades, checksum)
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        cur.execute(f"USE DATABASE {snowflake.database}")
        rows, sums, keys = loaded_day(cur, day)
    passed = is_loaded((rows, sums, keys), trades.height, key, checksum)
    check = AssetCheckResult(
        check_name=RAW_TICKS_CHECK,
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={"compacted_rows": trades.height, "loaded_rows": rows, "checksums": sums, "source_keys": keys},
    )
    return MaterializeResult(
        metadata={"day": day, "source_object_key": key, "sha256": checksum, "rows": trades.height, **counts},
        check_results=[check],
    )
