"""The OMS in PostgreSQL: the orders, transitions (audit trail) and fills of an account.

Tables ``oms_orders``, ``oms_order_transitions`` and ``oms_fills`` (migration ``002_oms``, in the
golden bars' schema) are keyed by the deterministic ids the kernels derive: ``client_order_id``,
the transition's ``seq`` per order, ``fill_id``, each within an ``account`` (a paper replay, the
paper workers, a broker account). Writing is idempotent:

- a row whose key is stored already is not written again (``ON CONFLICT DO NOTHING``), so a replay
  or a redelivered batch adds nothing; nothing is ever accumulated into a stored row;
- an order's mutable part (status, filled quantity, average price) moves only forward: it is
  replaced whole by a write whose latest transition (``last_seq``) is later than the stored one,
  never by an older snapshot;
- the same key with other content (an order's side, a fill's price, a transition's target) is a
  bug upstream: the whole write is refused with :class:`ConflictingDuplicate` before anything of
  it is stored.

The frames are the paper replay's (``ORDER_SCHEMA``, ``TRANSITION_SCHEMA``, ``FILL_SCHEMA``), so
the offline path and a worker holding an :class:`~tickforge.trading.oms.OrderManager` write the
same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import psycopg
from psycopg import sql

from tickforge.platform.io.postgres import apply_migrations
from tickforge.trading.oms import ConflictingDuplicate
from tickforge.trading.replay import FILL_SCHEMA, ORDER_SCHEMA, TRANSITION_SCHEMA

PAPER_REPLAY_ACCOUNT = "paper-replay"
PAPER_LIVE_ACCOUNT = "paper-live"  # the streaming paper path (risk, paper matcher), written by the OMS store


@dataclass(frozen=True)
class _Table:
    name: str
    keys: tuple[str, ...]  # the row's id within its account; the first names the row in errors
    columns: dict[str, str]  # column -> PostgreSQL type
    immutable: tuple[str, ...]  # columns a repeated key must carry unchanged

    @property
    def key(self) -> str:
        return self.keys[0]


ORDERS = _Table(
    "oms_orders",
    ("client_order_id",),
    {
        "client_order_id": "text",
        "strategy": "text",
        "book": "text",
        "timeframe": "text",
        "bucket": "text",
        "symbol": "text",
        "side": "text",
        "quantity": "double precision",
        "order_type": "text",
        "limit_price": "double precision",
        "time_in_force": "text",
        "decision_ts_ms": "bigint",
        "arrival_ts_ms": "bigint",
        "status": "text",
        "last_seq": "integer",
        "filled_quantity": "double precision",
        "average_fill_price": "double precision",
    },
    (
        "strategy",
        "book",
        "timeframe",
        "bucket",
        "symbol",
        "side",
        "quantity",
        "order_type",
        "limit_price",
        "time_in_force",
        "decision_ts_ms",
        "arrival_ts_ms",
    ),
)
TRANSITIONS = _Table(
    "oms_order_transitions",
    ("client_order_id", "seq"),
    {
        "client_order_id": "text",
        "seq": "integer",
        "from_status": "text",
        "to_status": "text",
        "ts_ms": "bigint",
        "reason": "text",
    },
    ("from_status", "to_status", "ts_ms", "reason"),
)
FILLS = _Table(
    "oms_fills",
    ("fill_id",),
    {
        "fill_id": "text",
        "client_order_id": "text",
        "symbol": "text",
        "side": "text",
        "ts_ms": "bigint",
        "price": "double precision",
        "quantity": "double precision",
        "liquidity": "text",
        "fee": "double precision",
    },
    ("client_order_id", "symbol", "side", "ts_ms", "price", "quantity", "liquidity", "fee"),
)
_MUTABLE_ORDER_COLUMNS = ("status", "last_seq", "filled_quantity", "average_fill_price")


@dataclass(frozen=True)
class StoredCounts:
    orders_new: int
    orders_moved: int  # stored orders whose status moved forward
    transitions_new: int
    fills_new: int


@dataclass(frozen=True)
class OmsFrames:
    orders: pl.DataFrame
    transitions: pl.DataFrame
    fills: pl.DataFrame


def ensure_oms_tables(dsn: str, schema: str, timeframes: Sequence[str] = ()) -> None:
    """The OMS tables (the platform's migrations, idempotent)."""
    apply_migrations(dsn, schema, timeframes)


def store_oms(
    conn: psycopg.Connection,
    schema: str,
    account: str,
    orders: pl.DataFrame,
    transitions: pl.DataFrame,
    fills: pl.DataFrame,
) -> StoredCounts:
    """Write an account's orders, transitions and fills inside the caller's transaction.

    ``orders`` needs ORDER_SCHEMA's order columns, ``transitions`` every order's trail so far (its
    latest ``seq`` is the order's ``last_seq``), ``fills`` FILL_SCHEMA's columns. Raises
    :class:`ConflictingDuplicate` (and writes nothing) when a stored key has other content.
    """
    if not account or account.strip() != account:
        raise ValueError(f"account must be a non-empty name: {account!r}")
    order_rows = _order_rows(orders, transitions)
    transition_rows = _select(transitions, TRANSITIONS, TRANSITION_SCHEMA)
    fill_rows = _select(fills, FILLS, FILL_SCHEMA)
    unknown = set(transition_rows["client_order_id"]) - set(order_rows["client_order_id"])
    unknown |= set(fill_rows["client_order_id"]) - set(order_rows["client_order_id"])
    if unknown:
        raise ValueError(f"transitions or fills of orders not in the write: {sorted(unknown)[:5]}")
    with conn.cursor() as cur:
        _lock_account(cur, schema, account)
        for table, rows in ((ORDERS, order_rows), (TRANSITIONS, transition_rows), (FILLS, fill_rows)):
            clashes = _conflicts(cur, schema, account, table, rows)
            if clashes:
                raise ConflictingDuplicate(
                    f"{table.name}: {len(clashes)} stored row(s) of account {account} with other content, e.g. {clashes[:3]}"
                )
        orders_new, orders_moved = _upsert_orders(cur, schema, account, order_rows)
        transitions_new = _insert_new(cur, schema, account, TRANSITIONS, transition_rows)
        fills_new = _insert_new(cur, schema, account, FILLS, fill_rows)
    return StoredCounts(orders_new, orders_moved, transitions_new, fills_new)


def replace_oms_slice(
    conn: psycopg.Connection,
    schema: str,
    account: str,
    orders: pl.DataFrame,
    transitions: pl.DataFrame,
    fills: pl.DataFrame,
    decided_from_ms: int,
    decided_until_ms: int,
) -> StoredCounts:
    """A writer that owns an account's orders decided in ``[from, until)`` (a report's day) replaces
    them whole, with their transitions and fills, inside the caller's transaction: a rerun with
    other inputs (limits, latency) leaves exactly what it computed."""
    outside = orders.filter(~pl.col("decision_ts_ms").is_between(decided_from_ms, decided_until_ms, closed="left"))
    if not outside.is_empty():
        raise ValueError(f"orders decided outside the slice: {outside['client_order_id'].to_list()[:3]}")
    slice_ = sql.SQL(
        "SELECT client_order_id FROM {} WHERE account = %s AND decision_ts_ms >= %s AND decision_ts_ms < %s"
    ).format(sql.Identifier(schema, ORDERS.name))
    params = [account, decided_from_ms, decided_until_ms]
    with conn.cursor() as cur:
        _lock_account(cur, schema, account)
        for table in (FILLS, TRANSITIONS, ORDERS):
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE account = %s AND client_order_id IN (").format(
                    sql.Identifier(schema, table.name)
                )
                + slice_
                + sql.SQL(")"),
                [account, *params],
            )
    return store_oms(conn, schema, account, orders, transitions, fills)


def read_oms(
    conn: psycopg.Connection,
    schema: str,
    account: str,
    decided_from_ms: int | None = None,
    decided_until_ms: int | None = None,
    client_order_ids: Sequence[str] | None = None,
) -> OmsFrames:
    """An account's stored orders (decided in ``[from, until)`` when given, and among
    ``client_order_ids`` when given), with their transitions and fills, in id order (empty frames
    when the tables do not exist yet)."""
    where: sql.Composable = sql.SQL("o.account = %s")
    params: list[object] = [account]
    if decided_from_ms is not None:
        where += sql.SQL(" AND o.decision_ts_ms >= %s")
        params.append(decided_from_ms)
    if decided_until_ms is not None:
        where += sql.SQL(" AND o.decision_ts_ms < %s")
        params.append(decided_until_ms)
    if client_order_ids is not None:
        where += sql.SQL(" AND o.client_order_id = ANY(%s)")
        params.append(list(client_order_ids))
    out = {}
    for label, table, order_by in (
        ("orders", ORDERS, "client_order_id"),
        ("transitions", TRANSITIONS, "client_order_id, t.seq"),
        ("fills", FILLS, "fill_id"),
    ):
        columns = sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(c) for c in table.columns)
        query = sql.SQL(
            "SELECT {} FROM {} t JOIN {} o ON o.account = t.account AND o.client_order_id = t.client_order_id WHERE "
        ).format(columns, sql.Identifier(schema, table.name), sql.Identifier(schema, ORDERS.name))
        query += where + sql.SQL(" ORDER BY t." + order_by)  # order_by: the constants above
        try:
            with conn.transaction():
                rows = conn.execute(query, params).fetchall()
        except psycopg.errors.UndefinedTable:
            rows = []
        out[label] = pl.DataFrame(rows, schema={c: _polars_type(table, c) for c in table.columns}, orient="row")
    return OmsFrames(out["orders"], out["transitions"], out["fills"])


# ------------------------------------------------------------------ internals


def _lock_account(cur: psycopg.Cursor, schema: str, account: str) -> None:
    """One writer of an account at a time, until its transaction ends: without it, two writers of
    the same key both pass the conflict check (neither sees the other's uncommitted rows) and the
    second one's rows are dropped by ``ON CONFLICT`` instead of refused. The two-key form keeps
    these locks apart from the migrations' (one key: the schema)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (f"{schema}.oms", account))


_PL_TYPES = {"text": pl.String, "double precision": pl.Float64, "bigint": pl.Int64, "integer": pl.Int32}


def _polars_type(table: _Table, column: str) -> type[pl.DataType]:
    return _PL_TYPES[table.columns[column]]


def _select(frame: pl.DataFrame, table: _Table, schema: dict) -> pl.DataFrame:
    missing = [c for c in table.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table.name}: the frame lacks {missing}")
    types = {c: schema.get(c, _polars_type(table, c)) for c in table.columns}
    rows = frame.select(list(table.columns)).cast(types).unique(maintain_order=True)  # type: ignore[arg-type]
    repeated = rows.filter(pl.struct(table.keys).is_duplicated())
    if not repeated.is_empty():
        raise ConflictingDuplicate(
            f"{table.name}: one key with two contents in the write: {repeated[table.key].to_list()[:3]}"
        )
    return rows


def _order_rows(orders: pl.DataFrame, transitions: pl.DataFrame) -> pl.DataFrame:
    last = transitions.group_by("client_order_id").agg(pl.col("seq").max().cast(pl.Int32).alias("last_seq"))
    frame = orders.drop("last_seq", strict=False).join(last, on="client_order_id", how="left")
    if frame["last_seq"].null_count():
        bare = frame.filter(pl.col("last_seq").is_null())["client_order_id"].to_list()
        raise ValueError(f"orders without a transition (every order has its NEW entry): {bare[:5]}")
    return _select(frame, ORDERS, {**ORDER_SCHEMA, "last_seq": pl.Int32})


def _unnest(table: _Table, rows: pl.DataFrame) -> tuple[sql.Composable, list[list[object]]]:
    """``unnest(%s::type[], ...) AS i(columns)``: the whole batch as one relation."""
    arrays = sql.SQL(", ").join(sql.SQL("%s::" + t + "[]") for t in table.columns.values())
    names = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    return sql.SQL("unnest({}) AS i({})").format(arrays, names), [rows[c].to_list() for c in table.columns]


def _key_match(table: _Table) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("t.{0} = i.{0}").format(sql.Identifier(k)) for k in table.keys)


def _conflicts(cur: psycopg.Cursor, schema: str, account: str, table: _Table, rows: pl.DataFrame) -> list[str]:
    if rows.is_empty():
        return []
    source, params = _unnest(table, rows)
    stored = sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(c) for c in table.immutable)
    given = sql.SQL(", ").join(sql.SQL("i.") + sql.Identifier(c) for c in table.immutable)
    query = sql.SQL(
        "SELECT i.{key} FROM {source} JOIN {table} t ON t.account = %s AND {match} "
        "WHERE ({stored}) IS DISTINCT FROM ({given})"
    ).format(
        key=sql.Identifier(table.key),
        source=source,
        table=sql.Identifier(schema, table.name),
        match=_key_match(table),
        stored=stored,
        given=given,
    )
    return [r[0] for r in cur.execute(query, [*params, account]).fetchall()]


def _upsert_orders(cur: psycopg.Cursor, schema: str, account: str, rows: pl.DataFrame) -> tuple[int, int]:
    if rows.is_empty():
        return 0, 0
    source, params = _unnest(ORDERS, rows)
    names = sql.SQL(", ").join(map(sql.Identifier, ORDERS.columns))
    target = sql.Identifier(schema, ORDERS.name)
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in _MUTABLE_ORDER_COLUMNS
    )
    query = sql.SQL(
        "INSERT INTO {target} (account, {names}) SELECT %s, {names} FROM {source} "
        "ON CONFLICT (account, client_order_id) DO UPDATE SET {updates}, updated_at = now() "
        "WHERE {target}.last_seq < EXCLUDED.last_seq RETURNING (xmax = 0)"
    ).format(target=target, names=names, source=source, updates=updates)
    inserted = [r[0] for r in cur.execute(query, [account, *params]).fetchall()]
    return sum(inserted), len(inserted) - sum(inserted)


def _insert_new(cur: psycopg.Cursor, schema: str, account: str, table: _Table, rows: pl.DataFrame) -> int:
    if rows.is_empty():
        return 0
    source, params = _unnest(table, rows)
    names = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    conflict = sql.SQL(", ").join(map(sql.Identifier, ("account", *table.keys)))
    query = sql.SQL("INSERT INTO {} (account, {}) SELECT %s, {} FROM {} ON CONFLICT ({}) DO NOTHING").format(
        sql.Identifier(schema, table.name), names, names, source, conflict
    )
    return cur.execute(query, [account, *params]).rowcount
