"""The live view's trading panel: one symbol's orders, fills and positions, from the OMS tables
the paper path writes in PostgreSQL (``oms_orders``, ``oms_fills``; read through the trading
store). Positions are booked from the fills with the accounting kernel, marked at the latest bar."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import polars as pl
import psycopg
from psycopg import sql

from tickforge.platform.settings import Settings
from tickforge.trading.accounting import Ledger
from tickforge.trading.orders import Fill
from tickforge.trading.store import ORDERS, read_oms

log = logging.getLogger(__name__)

POSITION_COLUMNS = {
    "book": pl.String,
    "quantity": pl.Float64,
    "average_cost": pl.Float64,
    "mark_price": pl.Float64,
    "realized_pnl": pl.Float64,
    "unrealized_pnl": pl.Float64,
    "fees": pl.Float64,
}


@dataclass(frozen=True)
class SymbolTrading:
    """What one account did in one symbol: its orders (latest decision first), fills (latest
    first) and the orders' books' positions."""

    account: str
    orders: pl.DataFrame
    fills: pl.DataFrame
    positions: pl.DataFrame


def positions_frame(orders: pl.DataFrame, fills: pl.DataFrame, mark_price: float | None) -> pl.DataFrame:
    """Per book (the order's book, else its strategy): the position the fills leave, by the
    ledger's average-cost rule with the fees as stored, marked at ``mark_price`` (else the last fill)."""
    books = dict(zip(orders["client_order_id"], orders["book"].fill_null(orders["strategy"]), strict=True))
    ledger = Ledger(initial_capital=1.0)  # only the positions are read: the cash is beside the point
    for row in fills.sort("ts_ms", "fill_id").iter_rows(named=True):
        fill = Fill(
            row["fill_id"],
            row["client_order_id"],
            row["symbol"],
            row["side"],
            row["ts_ms"],
            row["price"],
            row["quantity"],
            row["liquidity"],
        )
        ledger.apply_fill(books[fill.client_order_id], fill, fee=row["fee"])
    if mark_price is not None and fills.height:
        ledger.mark(fills["symbol"][0], mark_price)
    rows = [
        {
            "book": p.strategy,
            "quantity": p.quantity,
            "average_cost": p.average_cost or None,
            "mark_price": p.mark_price,
            "realized_pnl": p.realized_pnl,
            "unrealized_pnl": p.unrealized_pnl,
            "fees": p.fees,
        }
        for p in ledger.positions()
    ]
    return pl.DataFrame(rows, schema=POSITION_COLUMNS).sort("book")


class TradingBook:
    """The OMS tables of the settings' PostgreSQL, read at most every ``ttl_s`` per symbol."""

    def __init__(self, settings: Settings, ttl_s: float = 5.0) -> None:
        self.dsn = settings.postgres.dsn.get_secret_value()
        self.schema = settings.postgres.schema_name
        self.ttl_s = ttl_s
        self._read: dict[tuple[str, str | None], tuple[float, list[str], SymbolTrading | None]] = {}

    def symbol(
        self, symbol: str, account: str | None = None, mark_price: float | None = None
    ) -> tuple[list[str], SymbolTrading | None]:
        """The accounts with orders in ``symbol`` (latest decision first) and what ``account``
        (default: the first of them) did in it; ``([], None)`` when nothing traded it."""
        key = (symbol, account)
        held = self._read.get(key)
        if held is not None and time.monotonic() - held[0] < self.ttl_s:
            return held[1], held[2]
        accounts, read = self._fetch(symbol, account)
        trading = None if read is None else SymbolTrading(*read, positions_frame(read[1], read[2], mark_price))
        self._read[key] = (time.monotonic(), accounts, trading)
        return accounts, trading

    def _fetch(
        self, symbol: str, account: str | None
    ) -> tuple[list[str], tuple[str, pl.DataFrame, pl.DataFrame] | None]:
        """The accounts trading ``symbol`` and the chosen one's (account, orders, fills) in it."""
        query = sql.SQL(
            "SELECT account FROM {} WHERE symbol = %s GROUP BY account ORDER BY max(decision_ts_ms) DESC, account"
        ).format(sql.Identifier(self.schema, ORDERS.name))
        with psycopg.connect(self.dsn, connect_timeout=3) as conn:
            try:
                accounts = [r[0] for r in conn.execute(query, (symbol,)).fetchall()]
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                return [], None  # no OMS tables yet: nothing has traded
            chosen = account if account in accounts else (accounts[0] if accounts else None)
            if chosen is None:
                return accounts, None
            frames = read_oms(conn, self.schema, chosen)
        orders = frames.orders.filter(pl.col("symbol") == symbol).sort(
            "decision_ts_ms", "client_order_id", descending=True
        )
        fills = frames.fills.filter(pl.col("symbol") == symbol).sort("ts_ms", "fill_id", descending=True)
        return accounts, (chosen, orders, fills)
