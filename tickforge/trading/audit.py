"""Checks of a paper replay's output against the market data it ran on.

- Taker fills: each is at the opposite best of a two-sided, uncrossed quote that prevailed at the
  fill (the last quote stamped at or before it; when several quotes share the fill's millisecond,
  one of them), and what all taker fills took from one displayed liquidity (a run of quotes
  repeating the same price and size on that side, as the matcher counts it) never exceeds its size.
- Orders: filled quantity never exceeds the order's quantity.
- Accounting: after every fill ``cash + positions x mark == capital + realized + unrealized - fees``.

Each check returns the violations as readable lines (empty: the check passed).
"""

from __future__ import annotations

import numpy as np
import polars as pl

_PRICE_EPS = 1e-9


def taker_fill_violations(fills: pl.DataFrame, quotes: pl.DataFrame) -> list[str]:
    problems: list[str] = []
    taker = fills.filter(pl.col("liquidity") == "taker")
    for (symbol,), group in taker.group_by(["symbol"], maintain_order=True):
        q = quotes.filter(pl.col("symbol") == symbol).sort("ts_ms", maintain_order=True)
        if q.is_empty():
            problems.append(f"{symbol}: {group.height} taker fills without any quote")
            continue
        ts = q["ts_ms"].to_numpy()
        side_data = {}
        for side, price_col, size_col in (("buy", "ask", "ask_size"), ("sell", "bid", "bid_size")):
            changed = pl.col(price_col).ne_missing(pl.col(price_col).shift()) | pl.col(size_col).ne_missing(
                pl.col(size_col).shift()
            )
            run = q.select(changed.fill_null(True).cum_sum()).to_series().to_numpy()
            side_data[side] = (q[price_col].fill_null(np.nan).to_numpy(), q[size_col].fill_null(np.nan).to_numpy(), run)
        bid = q["bid"].fill_null(np.nan).to_numpy()
        ask = q["ask"].fill_null(np.nan).to_numpy()
        taken: dict[tuple[str, int], float] = {}
        for row in group.iter_rows(named=True):
            t = row["ts_ms"]
            lo, hi = np.searchsorted(ts, t, "left"), np.searchsorted(ts, t, "right")
            candidates = range(lo, hi) if hi > lo else range(hi - 1, hi) if hi > 0 else range(0)
            price, size, run = side_data[row["side"]]
            match = next(
                (i for i in candidates if bid[i] < ask[i] and abs(price[i] - row["price"]) <= _PRICE_EPS), None
            )
            if match is None:
                problems.append(
                    f"{row['fill_id']}: {row['side']} {row['quantity']:g} @ {row['price']} is not the opposite "
                    f"best of a two-sided uncrossed quote prevailing at {t}"
                )
                continue
            key = (row["side"], int(run[match]))
            taken[key] = taken.get(key, 0.0) + row["quantity"]
            if not taken[key] <= size[match] + 1e-9:
                problems.append(
                    f"{row['fill_id']}: taker fills took {taken[key]:g} from a displayed {size[match]:g} "
                    f"({symbol} {row['side']} side at {t})"
                )
    return problems


def overfill_violations(orders: pl.DataFrame, fills: pl.DataFrame) -> list[str]:
    filled = fills.group_by("client_order_id").agg(pl.col("quantity").sum().alias("filled"))
    joined = orders.join(filled, on="client_order_id", how="right")
    bad = joined.filter(pl.col("quantity").is_null() | (pl.col("filled") > pl.col("quantity") * (1 + 1e-9)))
    return [f"{r['client_order_id']}: filled {r['filled']:g} of {r['quantity']}" for r in bad.iter_rows(named=True)]


def identity_violations(pnl: pl.DataFrame, tolerance: float = 1e-6) -> list[str]:
    """Rows whose accounting identity is off by more than ``tolerance`` x max(1, |equity|)."""
    bad = pnl.filter(pl.col("identity_gap").abs() > tolerance * pl.max_horizontal(pl.lit(1.0), pl.col("equity").abs()))
    return [
        f"after {r['fill_id'] or 'session end'} at {r['ts_ms']}: identity off by {r['identity_gap']:g}"
        for r in bad.iter_rows(named=True)
    ]
