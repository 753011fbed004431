"""``snowflake_bar_facts``: one UTC day of golden 1 m and 5 m bars upserted into Snowflake.

DDL lives in ``snowflake/ddl/*.sql`` (repository root) and is applied idempotently on every run.
The day's bars are bound with ``executemany`` into per-run staging tables in ``RAW``
(``write_pandas`` does not work against the local stand-in), then one transaction makes the
day's slice of each fact table equal to the golden bars: update changed rows, insert new ones,
delete bars no longer in the golden table, and maintain ``CORE.DIM_SYMBOL``. A rerun with
unchanged golden bars changes nothing (not even ``LOADED_AT``).

The upsert is written as UPDATE ... FROM + INSERT ... WHERE NOT EXISTS rather than MERGE:
fakesnow 0.12 emulates MERGE with a temporary table in a second DuckDB catalog, which fails
inside an explicit transaction ("a single transaction can only write to a single attached
database"), and atomicity across both fact tables matters more than the keyword. The
statements are plain Snowflake SQL, so production runs the same code.
"""

from collections.abc import Sequence
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    asset,
)
from dagster_snowflake import SnowflakeResource
from pydantic import Field

from tickforge.defs.lib.frames import validated_bars
from tickforge.defs.lib.golden_bars import read_golden_bars
from tickforge.defs.lib.keys import golden_bars_key
from tickforge.defs.lib.partitions import daily_partitions, day_bounds_ms
from tickforge.defs.lib.snowflake import chunks, ddl_statements
from tickforge.defs.postgres.resources import PostgresResource
from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.platform.io.postgres import count_bars

# Golden timeframe -> fact table.
FACT_TABLES: dict[str, str] = {"1m": "CORE.FACT_TICKS_60S", "5m": "CORE.FACT_TICKS_300S"}
VALUE_COLUMNS = ("OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "NOTIONAL", "VWAP", "TRADE_COUNT", "CLOSED_AT_MS")
STAGE_COLUMNS = ("BAR_ID", "SYMBOL", "WINDOW_START", "WINDOW_END", *VALUE_COLUMNS)
INSERT_CHUNK = 5_000


def bar_id(symbol: str, window_start: int, window_seconds: int) -> str:
    return f"{symbol}-{window_start}-{window_seconds}"


def staging_rows(bars: pd.DataFrame, timeframe: str) -> list[tuple[Any, ...]]:
    seconds = timeframe_ms(timeframe) // 1000
    ids = [bar_id(s, w, seconds) for s, w in zip(bars["symbol"].tolist(), bars["window_start"].tolist(), strict=True)]
    columns = [ids] + [bars[c.lower()].tolist() for c in STAGE_COLUMNS[1:-1]]
    columns.append([None if pd.isna(v) else int(v) for v in bars["closed_at_ms"].tolist()])
    return list(zip(*columns, strict=True))


def upsert_statements(fact: str, stage: str, start_ms: int, end_ms: int) -> list[tuple[str, str]]:
    """(label, SQL) making the day's slice of ``fact`` equal to ``stage``."""
    changed = " OR ".join(f"NOT EQUAL_NULL(t.{c}, s.{c})" for c in ("WINDOW_END", *VALUE_COLUMNS))
    sets = ", ".join(f"{c} = s.{c}" for c in ("WINDOW_END", *VALUE_COLUMNS))
    cols = ", ".join(STAGE_COLUMNS)
    src = ", ".join(f"s.{c}" for c in STAGE_COLUMNS)
    return [
        (
            "updated",
            f"UPDATE {fact} AS t SET {sets}, LOADED_AT = CURRENT_TIMESTAMP() "
            f"FROM {stage} AS s WHERE t.BAR_ID = s.BAR_ID AND ({changed})",
        ),
        (
            "inserted",
            f"INSERT INTO {fact} ({cols}, BAR_TS, LOADED_AT) "
            f"SELECT {src}, TO_TIMESTAMP_NTZ(s.WINDOW_START, 3), CURRENT_TIMESTAMP() FROM {stage} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {fact} AS t WHERE t.BAR_ID = s.BAR_ID)",
        ),
        (
            "deleted",
            f"DELETE FROM {fact} AS t WHERE t.WINDOW_START >= {int(start_ms)} "
            f"AND t.WINDOW_START < {int(end_ms)} "
            f"AND NOT EXISTS (SELECT 1 FROM {stage} AS s WHERE s.BAR_ID = t.BAR_ID)",
        ),
    ]


def dim_symbol_statements(stages: Sequence[str]) -> list[tuple[str, str]]:
    union = " UNION ALL ".join(f"SELECT SYMBOL, WINDOW_START FROM {s}" for s in stages)
    span = f"SELECT SYMBOL, MIN(WINDOW_START) AS LO, MAX(WINDOW_START) AS HI FROM ({union}) AS u GROUP BY SYMBOL"
    return [
        (
            "dim_updated",
            "UPDATE CORE.DIM_SYMBOL AS d SET FIRST_WINDOW_START = LEAST(d.FIRST_WINDOW_START, s.LO), "
            "LAST_WINDOW_START = GREATEST(d.LAST_WINDOW_START, s.HI), UPDATED_AT = CURRENT_TIMESTAMP() "
            f"FROM ({span}) AS s WHERE d.SYMBOL = s.SYMBOL "
            "AND (s.LO < d.FIRST_WINDOW_START OR s.HI > d.LAST_WINDOW_START)",
        ),
        (
            "dim_inserted",
            "INSERT INTO CORE.DIM_SYMBOL (SYMBOL, FIRST_WINDOW_START, LAST_WINDOW_START, UPDATED_AT) "
            f"SELECT s.SYMBOL, s.LO, s.HI, CURRENT_TIMESTAMP() FROM ({span}) AS s "
            "WHERE NOT EXISTS (SELECT 1 FROM CORE.DIM_SYMBOL AS d WHERE d.SYMBOL = s.SYMBOL)",
        ),
    ]


def fact_day_stats(cur: Any, fact: str, start_ms: int, end_ms: int) -> tuple[int, int]:
    """(rows, BAR_IDs occurring more than once) of the day's slice of a fact table."""
    where = f"WHERE WINDOW_START >= {int(start_ms)} AND WINDOW_START < {int(end_ms)}"
    rows = cur.execute(f"SELECT COUNT(*) FROM {fact} {where}").fetchone()[0]
    dups = cur.execute(
        f"SELECT COUNT(*) FROM (SELECT BAR_ID FROM {fact} {where} GROUP BY BAR_ID HAVING COUNT(*) > 1) AS d"
    ).fetchone()[0]
    return int(rows), int(dups)


def load_fact_window(
    log: Any, postgres: PostgresResource, snowflake: SnowflakeResource, start_ms: int, end_ms: int, tag: str
) -> dict[str, int]:
    """Make the facts' slice ``[start_ms, end_ms)`` equal to the golden 1 m / 5 m bars (one
    transaction over both tables); ``tag`` names the per-run staging tables. Returns counts."""
    golden = {tf: validated_bars(read_golden_bars(postgres, tf, start_ms, end_ms)) for tf in FACT_TABLES}
    stages = {tf: f"RAW.STG_BAR_FACTS_{tag}_{timeframe_ms(tf) // 1000}S" for tf in FACT_TABLES}
    counts: dict[str, int] = {}
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        for statement in ddl_statements(snowflake.database):
            cur.execute(statement)
        try:
            for tf, stage in stages.items():
                cur.execute(
                    f"CREATE OR REPLACE TABLE {stage} (BAR_ID VARCHAR, SYMBOL VARCHAR, "
                    "WINDOW_START NUMBER(38, 0), WINDOW_END NUMBER(38, 0), OPEN FLOAT, HIGH FLOAT, "
                    "LOW FLOAT, CLOSE FLOAT, VOLUME FLOAT, NOTIONAL FLOAT, VWAP FLOAT, "
                    "TRADE_COUNT NUMBER(38, 0), CLOSED_AT_MS NUMBER(38, 0))"
                )
                placeholders = ", ".join(["%s"] * len(STAGE_COLUMNS))
                for chunk in chunks(staging_rows(golden[tf], tf), INSERT_CHUNK):
                    cur.executemany(
                        f"INSERT INTO {stage} ({', '.join(STAGE_COLUMNS)}) VALUES ({placeholders})",
                        chunk,
                    )
            cur.execute("BEGIN")
            try:
                for tf, fact in FACT_TABLES.items():
                    for label, statement in upsert_statements(fact, stages[tf], start_ms, end_ms):
                        cur.execute(statement)
                        counts[f"{tf}_{label}"] = max(cur.rowcount or 0, 0)
                for label, statement in dim_symbol_statements(list(stages.values())):
                    cur.execute(statement)
                    counts[label] = max(cur.rowcount or 0, 0)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        finally:
            for stage in stages.values():
                cur.execute(f"DROP TABLE IF EXISTS {stage}")
        stats = {tf: fact_day_stats(cur, fact, start_ms, end_ms) for tf, fact in FACT_TABLES.items()}
    log.info("[%s, %s): %s", start_ms, end_ms, counts)
    return {
        **{f"golden_{tf}": len(golden[tf]) for tf in FACT_TABLES},
        **counts,
        **{f"rows_{FACT_TABLES[tf]}": rows for tf, (rows, _) in stats.items()},
        "changed": sum(counts.values()),
    }


def facts_match_golden(
    postgres: PostgresResource, snowflake: SnowflakeResource, start_ms: int, end_ms: int, check_name: str
) -> AssetCheckResult:
    """The slice's fact rows equal the golden bar count per timeframe; no BAR_ID repeats."""
    metadata: dict[str, Any] = {"start_ms": start_ms, "end_ms": end_ms}
    passed = True
    with postgres.connect() as pg:
        goldens = {tf: count_bars(pg, postgres.schema_name, tf, start_ms, end_ms) for tf in FACT_TABLES}
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        cur.execute(f"USE DATABASE {snowflake.database}")
        for tf, fact in FACT_TABLES.items():
            golden = goldens[tf]
            rows, dups = fact_day_stats(cur, fact, start_ms, end_ms)
            metadata |= {f"{tf}_golden": golden, f"{tf}_facts": rows, f"{tf}_duplicate_bar_ids": dups}
            passed = passed and rows == golden and dups == 0
    return AssetCheckResult(check_name=check_name, passed=passed, severity=AssetCheckSeverity.ERROR, metadata=metadata)


FACTS_CHECK = "facts_match_golden_counts"


@asset(
    partitions_def=daily_partitions,
    deps=[AssetKey("bar_reconciliation"), *(golden_bars_key(tf) for tf in FACT_TABLES)],
    kinds={"snowflake", "python"},
    owners=["team:analytics-platform"],
    group_name="warehouse",
    description="The day's golden 1 m and 5 m bars in CORE.FACT_TICKS_60S / CORE.FACT_TICKS_300S "
    "(keyed by BAR_ID = <symbol>-<window_start>-<window seconds>) and CORE.DIM_SYMBOL.",
    metadata={"fact_tables": dict(FACT_TABLES)},
    # Checked in the same step, against the golden bars as they are right after the load (the
    # archive downstream may move an old day's golden bars out of PostgreSQL afterwards).
    check_specs=[
        AssetCheckSpec(
            FACTS_CHECK,
            asset="snowflake_bar_facts",
            description="The day's fact rows equal the golden bar count per timeframe; no BAR_ID repeats.",
        )
    ],
)
def snowflake_bar_facts(
    context: AssetExecutionContext, postgres: PostgresResource, snowflake: SnowflakeResource
) -> MaterializeResult:
    day = context.partition_key
    start_ms, end_ms = day_bounds_ms(day)
    tag = f"{day.replace('-', '')}_{context.run.run_id[:8].upper()}"
    metadata = load_fact_window(context.log, postgres, snowflake, start_ms, end_ms, tag)
    check = facts_match_golden(postgres, snowflake, start_ms, end_ms, FACTS_CHECK)
    return MaterializeResult(metadata={"day": day, **metadata}, check_results=[check])


class FactWindowConfig(Config):
    window_start_ms: int = Field(description="Start of the window (epoch ms, a multiple of window_ms)")
    window_ms: int = Field(default=300_000, description="Window length (default 5 minutes)")


WINDOW_CHECK = "window_facts_match_golden_counts"


@asset(
    deps=[*(golden_bars_key(tf) for tf in FACT_TABLES)],
    kinds={"snowflake", "python"},
    owners=["team:analytics-platform"],
    group_name="warehouse",
    description="Intraday load of one window (default 5 minutes) of golden 1 m / 5 m bars into the "
    "same fact tables as `snowflake_bar_facts`, launched by `snowflake_window_sensor` once the "
    "golden watermark has passed the window. Same upsert: the nightly load of the day agrees.",
    metadata={"fact_tables": dict(FACT_TABLES)},
    check_specs=[
        AssetCheckSpec(
            WINDOW_CHECK,
            asset="snowflake_window_facts",
            description="The window's fact rows equal the golden bar count per timeframe.",
        )
    ],
)
def snowflake_window_facts(
    context: AssetExecutionContext,
    config: FactWindowConfig,
    postgres: PostgresResource,
    snowflake: SnowflakeResource,
) -> MaterializeResult:
    start_ms = config.window_start_ms
    if start_ms % config.window_ms:
        raise ValueError(f"window_start_ms {start_ms} is not aligned to {config.window_ms} ms")
    end_ms = start_ms + config.window_ms
    tag = f"W{start_ms}_{context.run.run_id[:8].upper()}"
    metadata = load_fact_window(context.log, postgres, snowflake, start_ms, end_ms, tag)
    check = facts_match_golden(postgres, snowflake, start_ms, end_ms, WINDOW_CHECK)
    return MaterializeResult(
        metadata={"window_start_ms": start_ms, "window_end_ms": end_ms, **metadata}, check_results=[check]
    )
