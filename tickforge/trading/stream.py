"""One ordered market event stream from quote and trade frames (the platform readers' columns).

Order: by ``ts_ms``; at the same millisecond quotes come before trades (the quote that prevailed
at a print includes updates stamped the same millisecond, as the as-of join of the data's
documentation does); within a kind, input order. Missing prices or sizes become NaN, which the
matcher treats as an absent side.
"""

from __future__ import annotations

import math

import polars as pl

from tickforge.platform.contracts import Quote, Trade

MarketEvent = Quote | Trade


def _num(x: float | None) -> float:
    return math.nan if x is None else x


def market_events(quotes: pl.DataFrame, trades: pl.DataFrame, symbol: str | None = None) -> list[MarketEvent]:
    """Quotes (``ts_ms, symbol, bid, ask, bid_size, ask_size``) and trades (``ts_ms, symbol,
    price, size``) merged into one list in event order, optionally for one symbol."""
    if symbol is not None:
        quotes = quotes.filter(pl.col("symbol") == symbol)
        trades = trades.filter(pl.col("symbol") == symbol)
    q = quotes.select("ts_ms", "symbol", "bid", "ask", "bid_size", "ask_size")
    t = trades.select("ts_ms", "symbol", "price", "size")
    q_events = [
        Quote(ts_ms=ts, symbol=s, bid=_num(b), ask=_num(a), bid_size=_num(bs), ask_size=_num(az))
        for ts, s, b, a, bs, az in q.iter_rows()
    ]
    t_events = [Trade(ts_ms=ts, symbol=s, price=p, size=z) for ts, s, p, z in t.iter_rows()]
    # merge two ts-sorted lists (readers keep file order; sort stably in case a file is not sorted)
    order = (
        pl.concat(
            [
                pl.DataFrame({"ts_ms": q["ts_ms"], "kind": pl.Series([0] * q.height, dtype=pl.Int8)}).with_row_index(
                    "i"
                ),
                pl.DataFrame({"ts_ms": t["ts_ms"], "kind": pl.Series([1] * t.height, dtype=pl.Int8)}).with_row_index(
                    "i"
                ),
            ]
        )
        .sort("ts_ms", "kind", "i", maintain_order=True)
        .select("kind", "i")
    )
    sources = (q_events, t_events)
    return [sources[k][i] for k, i in order.iter_rows()]
