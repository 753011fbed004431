"""PostgreSQL: migrations and the golden bar store.

The store is every read and write of the golden tables ``<schema>.bars_<tf>`` and their
watermarks: :func:`store_bars` (the bar store's transaction), :func:`golden_bars` (a range),
:func:`latest_bars`, :func:`window_signatures`, :func:`watermark_reports` and the per-partition
watermarks. Each takes the caller's connection, so a Dagster resource, a long-lived writer and a
command share the same SQL.

Bars are keyed by ``(symbol, window_start)`` and replaced whole on conflict: a replay, a redelivery
or a corrected bar leaves exactly one row with the latest full values. Adding to the stored row
(``volume = table.volume + EXCLUDED.volume``) would count a redelivered bar twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import polars as pl
import psycopg
from psycopg import sql

from tickforge.platform.contracts import Bar
from tickforge.platform.retry import Backoff
from tickforge.platform.settings import Settings

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
            log.warning(
                "postgres unavailable, retrying",
                extra={"error": str(exc).strip(), "attempt": backoff.attempts, "delay_s": delay},
            )
            wait(delay)
            if stopping():
                return None


# The golden bar row: the Bar contract's stored fields, in table order (``stored_at`` is the table's own).
BAR_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "window_start": pl.Int64,
        "window_end": pl.Int64,
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
        "notional": pl.Float64,
        "vwap": pl.Float64,
        "trade_count": pl.Int64,
        "first_ts": pl.Int64,
        "last_ts": pl.Int64,
        "spread_bps": pl.Float64,
        "imbalance": pl.Float64,
        "closed_at_ms": pl.Int64,
    }
)
BAR_COLUMNS: tuple[str, ...] = tuple(BAR_SCHEMA)

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
    tables = "\n".join(_BAR_TABLE_DDL.format(schema=schema, table=bar_table(tf)) for tf in timeframes)
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
            for row in conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema)))
        }
        for version, text in migration_sql(schema, timeframes):
            if version in done:
                continue
            conn.execute(text)  # rendered from trusted package files
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(sql.Identifier(schema)),
                (version,),
            )
            applied_now.append(version)
        for tf in timeframes:
            conn.execute(_BAR_TABLE_DDL.format(schema=schema, table=bar_table(tf)))
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


def record_watermark(conn: psycopg.Connection, schema: str, timeframe: str, partition: int, watermark_ms: int) -> None:
    """Advance (never move back) a timeframe's stored watermark for one source partition.
    ``updated_at`` is when it last grew: a partition that keeps reporting the same watermark is
    stuck, not fresh."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {t} (timeframe, partition, watermark_ms) VALUES (%s, %s, %s) "
            "ON CONFLICT (timeframe, partition) DO UPDATE SET "
            "watermark_ms = GREATEST({t}.watermark_ms, EXCLUDED.watermark_ms), "
            "updated_at = CASE WHEN EXCLUDED.watermark_ms > {t}.watermark_ms THEN now() ELSE {t}.updated_at END"
        ).format(t=sql.Identifier(_check_ident(schema), "bar_watermarks")),
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
        sql.SQL("SELECT min(watermark_ms) FROM {}.bar_watermarks WHERE timeframe = %s").format(sql.Identifier(schema)),
        (timeframe,),
    ).fetchone()
    return None if row is None else row[0]


def store_bars(
    conn: psycopg.Connection, schema: str, bars: Mapping[str, Iterable[Bar]], watermarks: Mapping[tuple[str, int], int]
) -> int:
    """Bars (by timeframe) and watermarks (by timeframe and source partition) in one transaction:
    a watermark is only ever durable with the bars below it. Returns the bars written."""
    stored = 0
    with conn.transaction():
        for timeframe, rows in bars.items():
            stored += upsert_bars(conn, schema, timeframe, rows)
        for (timeframe, partition), watermark_ms in watermarks.items():
            record_watermark(conn, schema, timeframe, partition, watermark_ms)
    return stored


def _table(schema: str, timeframe: str) -> sql.Identifier:
    return sql.Identifier(_check_ident(schema), bar_table(timeframe))


_COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in BAR_COLUMNS)


def _frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=BAR_SCHEMA, orient="row")


def golden_bars(
    conn: psycopg.Connection,
    schema: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    symbols: Sequence[str] | None = None,
    lock: bool = False,
) -> pl.DataFrame:
    """The golden bars with ``start_ms <= window_start < end_ms`` (of ``symbols``, else all),
    sorted by symbol and window; ``lock`` holds the rows (``FOR UPDATE``) until the caller's
    transaction ends."""
    where: sql.Composable = sql.SQL("window_start >= %s AND window_start < %s")
    params: list[Any] = [start_ms, end_ms]
    if symbols is not None:
        where += sql.SQL(" AND symbol = ANY(%s)")
        params.append(list(symbols))
    query = sql.SQL("SELECT {cols} FROM {table} WHERE {where} ORDER BY symbol, window_start{lock}").format(
        cols=_COLUMN_LIST,
        table=_table(schema, timeframe),
        where=where,
        lock=sql.SQL(" FOR UPDATE" if lock else ""),
    )
    return _frame(conn.execute(query, params).fetchall())


def latest_bars(
    conn: psycopg.Connection, schema: str, timeframe: str, symbol: str, limit: int, since_ms: int | None = None
) -> pl.DataFrame:
    """A symbol's latest ``limit`` golden bars (from ``since_ms`` on), oldest first."""
    query = sql.SQL(
        "SELECT {cols} FROM {table} WHERE symbol = %s AND window_start >= %s ORDER BY window_start DESC LIMIT %s"
    ).format(cols=_COLUMN_LIST, table=_table(schema, timeframe))
    rows = conn.execute(query, (symbol, since_ms if since_ms is not None else -(2**62), limit)).fetchall()
    return _frame(rows[::-1])


def bar_symbols(conn: psycopg.Connection, schema: str, timeframe: str) -> list[str]:
    """The symbols with a golden bar of ``timeframe``, sorted."""
    rows = conn.execute(sql.SQL("SELECT DISTINCT symbol FROM {}").format(_table(schema, timeframe))).fetchall()
    return sorted(r[0] for r in rows)


def count_bars(conn: psycopg.Connection, schema: str, timeframe: str, start_ms: int, end_ms: int) -> int:
    """How many golden bars have ``start_ms <= window_start < end_ms``."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE window_start >= %s AND window_start < %s").format(
            _table(schema, timeframe)
        ),
        (start_ms, end_ms),
    ).fetchone()
    return 0 if row is None else int(row[0])


def delete_bars(
    conn: psycopg.Connection, schema: str, timeframe: str, symbols: Sequence[str], window_starts: Sequence[int]
) -> int:
    """Delete exactly the bars keyed ``(symbols[i], window_starts[i])``; returns the rows deleted."""
    cur = conn.execute(
        sql.SQL(
            "DELETE FROM {} AS t USING unnest(%s::text[], %s::bigint[]) AS k(symbol, window_start) "
            "WHERE t.symbol = k.symbol AND t.window_start = k.window_start"
        ).format(_table(schema, timeframe)),
        (list(symbols), list(window_starts)),
    )
    return cur.rowcount


def window_signatures(
    conn: psycopg.Connection, schema: str, timeframes: Sequence[str], start_ms: int, end_ms: int, window_ms: int
) -> dict[int, str]:
    """``{window start: signature}`` of the golden rows of ``timeframes`` per ``window_ms`` window in
    range. A signature is count, latest ``stored_at`` and the sum of the rows' ``xmin`` per
    timeframe: every committed upsert of a row changes it, even one whose transaction started
    before a row already seen."""
    parts = [
        sql.SQL(
            "SELECT {tf} AS tf, window_start - mod(window_start, {w}) AS w, count(*) AS n, "
            "(extract(epoch FROM max(stored_at)) * 1000000)::bigint AS at_us, "
            "sum((xmin::text)::bigint) AS xs FROM {table} "
            "WHERE window_start >= %s AND window_start < %s GROUP BY 2"
        ).format(tf=sql.Literal(tf), w=sql.Literal(window_ms), table=_table(schema, tf))
        for tf in timeframes
    ]
    query = sql.SQL(" UNION ALL ").join(parts) + sql.SQL(" ORDER BY 2, 1")
    out: dict[int, list[str]] = {}
    for tf, w, n, at_us, xs in conn.execute(query, [start_ms, end_ms] * len(parts)).fetchall():
        out.setdefault(int(w), []).append(f"{tf}:{n}:{at_us}:{xs}")
    return {w: "|".join(sigs) for w, sigs in out.items()}


def watermark_reports(conn: psycopg.Connection, schema: str, timeframes: Sequence[str]) -> dict[str, tuple[int, float]]:
    """``{timeframe: (golden watermark ms, epoch s it reached that value)}`` for the timeframes
    that have a watermark (none before the first migration). The golden watermark is the minimum
    over partitions, so its age is that of the partition holding it (of those tied at the
    minimum, the one that got there last): one stuck partition makes it stale however much the
    others advance."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{_check_ident(schema)}.bar_watermarks",)).fetchone()
    if exists is None or exists[0] is None:
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT ON (timeframe) timeframe, watermark_ms, extract(epoch FROM updated_at) "
            "FROM {}.bar_watermarks WHERE timeframe = ANY(%s) "
            "ORDER BY timeframe, watermark_ms ASC, updated_at DESC"
        ).format(sql.Identifier(schema)),
        (list(timeframes),),
    ).fetchall()
    return {tf: (int(mark), float(at)) for tf, mark, at in rows}


def golden_bar_source(settings: Settings) -> Callable[[str, list[str], int, int], pl.DataFrame]:
    """A bar source for :func:`tickforge.platform.bars.validate.validate_bars`: the golden bars
    of a timeframe, some symbols and a range in the settings' database, each call on its own
    connection."""
    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name

    def bars(timeframe: str, symbols: list[str], start_ms: int, end_ms: int) -> pl.DataFrame:
        with psycopg.connect(dsn) as conn:
            return golden_bars(conn, schema, timeframe, start_ms, end_ms, symbols)

    return bars
