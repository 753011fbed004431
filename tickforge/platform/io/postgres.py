"""PostgreSQL: migrations and golden bar storage.

Bars are keyed by ``(symbol, window_start)`` and replaced whole on conflict: a replay, a redelivery
or a corrected bar leaves exactly one row with the latest full values (LESSONS: never
``volume = table.volume + EXCLUDED.volume``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from tickforge.platform.contracts import Bar
from tickforge.platform.retry import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

# A long-lived writer's connection: connecting, a dead peer (keepalives) and a statement all have
# a bound, so an outage surfaces as an error to retry instead of a call that never returns.
WRITER_CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "options": "-c statement_timeout=60000",
}
# What a database that is restarting, stopped or unreachable raises (AdminShutdown included).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)


def connect_writer(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, **WRITER_CONNECT_OPTIONS)


def retry_on_outage(
    action: Callable[[], T],
    backoff: Backoff,
    wait: Callable[[float], None] = time.sleep,
    stopping: Callable[[], bool] = lambda: False,
) -> T | None:
    """``action()`` retried with exponential backoff while the database is away; None if
    ``stopping()`` turns true first. ``wait`` sleeps between attempts (a Kafka consumer passes a
    wait that keeps polling, so it stays in its group)."""
    while True:
        try:
            return action()
        except OUTAGE_ERRORS as exc:
            if stopping():
                return None
            delay = backoff.next_delay()
            log.warning("postgres unavailable, retrying", extra={"error": str(exc).strip(),
                                                                  "attempt": backoff.attempts, "delay_s": delay})
            wait(delay)
            if stopping():
                return None

BAR_COLUMNS: tuple[str, ...] = (
    "symbol",
    "window_start",
    "window_end",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "notional",
    "vwap",
    "trade_count",
    "first_ts",
    "last_ts",
    "spread_bps",
    "imbalance",
    "closed_at_ms",
)

_BAR_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.{table} (
    symbol       text             NOT NULL,
    window_start bigint           NOT NULL,
    window_end   bigint           NOT NULL,
    open         double precision NOT NULL,
    high         double precision NOT NULL,
    low          double precision NOT NULL,
    close        double precision NOT NULL,
    volume       double precision NOT NULL,
    notional     double precision NOT NULL,
    vwap         double precision NOT NULL,
    trade_count  integer          NOT NULL,
    first_ts     bigint           NOT NULL,
    last_ts      bigint           NOT NULL,
    spread_bps   double precision,
    imbalance    double precision,
    closed_at_ms bigint,
    stored_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, window_start)
);
CREATE INDEX IF NOT EXISTS {table}_window_start ON {schema}.{table} (window_start);
"""

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def bar_table(timeframe: str) -> str:
    """Golden bar table name of a timeframe: ``1s`` -> ``bars_1s``."""
    name = f"bars_{timeframe}"
    if not _IDENT.match(name):
        raise ValueError(f"timeframe {timeframe!r} does not make a table name")
    return name


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return name


def migration_sql(schema: str, timeframes: Sequence[str]) -> list[tuple[str, str]]:
    """(version, SQL) pairs in order, rendered for a schema and timeframe list."""
    schema = _check_ident(schema)
    tables = "\n".join(
        _BAR_TABLE_DDL.format(schema=schema, table=bar_table(tf)) for tf in timeframes
    )
    out = []
    folder = resources.files("tickforge.platform.io") / "migrations"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".sql"):
            text = entry.read_text().format(schema=schema, bar_tables=tables)
            out.append((entry.name.removesuffix(".sql"), text))
    return out


def apply_migrations(dsn: str, schema: str, timeframes: Sequence[str]) -> list[str]:
    """Apply pending migrations (idempotent); returns the versions applied now.

    Bar tables for timeframes added to the configuration later are created on every call
    (``CREATE TABLE IF NOT EXISTS``), so the list of timeframes can grow without a new migration.
    """
    schema = _check_ident(schema)
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations "
                "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(schema))
        )
        # One migrator at a time (tests and workers may start together).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        done = {
            row[0]
            for row in conn.execute(
                sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema))
            )
        }
        for version, text in migration_sql(schema, timeframes):
            if version in done:
                continue
            conn.execute(text)  # type: ignore[arg-type]  # rendered from trusted package files
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(
                    sql.Identifier(schema)
                ),
                (version,),
            )
            applied_now.append(version)
        for tf in timeframes:
            conn.execute(_BAR_TABLE_DDL.format(schema=schema, table=bar_table(tf)))  # type: ignore[arg-type]
        conn.commit()
    return applied_now


def _bar_row(bar: Bar) -> tuple[Any, ...]:
    return tuple(getattr(bar, column) for column in BAR_COLUMNS)


def upsert_bars_sql(schema: str, timeframe: str) -> sql.Composed:
    columns = [sql.Identifier(c) for c in BAR_COLUMNS]
    updates = [
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
        for c in BAR_COLUMNS
        if c not in ("symbol", "window_start")
    ]
    return sql.SQL(
        "INSERT INTO {table} ({cols}) VALUES ({vals}) "
        "ON CONFLICT (symbol, window_start) DO UPDATE SET {updates}, stored_at = now()"
    ).format(
        table=sql.Identifier(_check_ident(schema), bar_table(timeframe)),
        cols=sql.SQL(", ").join(columns),
        vals=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        updates=sql.SQL(", ").join(updates),
    )


def upsert_bars(conn: psycopg.Connection, schema: str, timeframe: str, bars: Iterable[Bar]) -> int:
    """Replace-whole upsert of bars of one timeframe inside the caller's transaction."""
    rows = [_bar_row(b) for b in bars]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(upsert_bars_sql(schema, timeframe), rows)
    return len(rows)


def record_watermark(
    conn: psycopg.Connection, schema: str, timeframe: str, partition: int, watermark_ms: int
) -> None:
    """Advance (never move back) a timeframe's stored watermark for one source partition."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.bar_watermarks (timeframe, partition, watermark_ms) VALUES (%s, %s, %s) "
            "ON CONFLICT (timeframe, partition) DO UPDATE SET "
            "watermark_ms = GREATEST({}.bar_watermarks.watermark_ms, EXCLUDED.watermark_ms), "
            "updated_at = now()"
        ).format(sql.Identifier(schema), sql.Identifier(schema)),
        (timeframe, partition, watermark_ms),
    )


def partition_watermarks(conn: psycopg.Connection, schema: str, timeframe: str) -> dict[int, int]:
    """Stored watermark per source partition of one timeframe."""
    rows = conn.execute(
        sql.SQL("SELECT partition, watermark_ms FROM {}.bar_watermarks WHERE timeframe = %s").format(
            sql.Identifier(schema)
        ),
        (timeframe,),
    ).fetchall()
    return dict(rows)


def golden_watermark(conn: psycopg.Connection, schema: str, timeframe: str) -> int | None:
    """How far the golden bars of a timeframe are complete: min over partitions (None if unknown)."""
    row = conn.execute(
        sql.SQL("SELECT min(watermark_ms) FROM {}.bar_watermarks WHERE timeframe = %s").format(
            sql.Identifier(schema)
        ),
        (timeframe,),
    ).fetchone()
    return None if row is None else row[0]
