"""The paper trading day in figures, from a replay's output frames (pure).

- PnL by strategy: realized, unrealized at the last print, fees and net, from each book's
  position at the session end.
- Slippage: each fill against its decision bar's close, in bps of that close, signed so a
  positive figure is a cost (bought above / sold below the close), quantity-weighted.
- Fill ratio: filled over ordered quantity of the orders risk approved.
- Rejections: orders risk rejected, by rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class PaperReport:
    pnl_by_strategy: pl.DataFrame  # strategy, books, realized_pnl, unrealized_pnl, fees, net_pnl
    slippage_by_strategy: pl.DataFrame  # strategy, fills, quantity, slippage_bps (weighted)
    fill_ratio: float | None  # None: no order reached the venue
    rejected_by_rule: dict[str, int]
    totals: dict[str, Any]


def paper_report(orders: pl.DataFrame, fills: pl.DataFrame, positions: pl.DataFrame, pnl: pl.DataFrame) -> PaperReport:
    final = positions.filter(pl.col("fill_id").is_null())
    by_strategy = (
        final.group_by("strategy")
        .agg(
            books=pl.col("book").n_unique(),
            realized_pnl=pl.col("realized_pnl").sum(),
            unrealized_pnl=pl.col("unrealized_pnl").sum(),
            fees=pl.col("fees").sum(),
        )
        .with_columns(net_pnl=pl.col("realized_pnl") + pl.col("unrealized_pnl") - pl.col("fees"))
        .sort("strategy")
    )
    sign = pl.when(pl.col("side") == "buy").then(1.0).otherwise(-1.0)
    priced = fills.join(
        orders.select("client_order_id", "strategy", "reference_price"), on="client_order_id", how="left"
    )
    priced = priced.filter(pl.col("reference_price").is_not_null()).with_columns(
        bps=sign * (pl.col("price") - pl.col("reference_price")) / pl.col("reference_price") * 10_000
    )
    slippage = (
        priced.group_by("strategy")
        .agg(
            fills=pl.len(),
            quantity=pl.col("quantity").sum(),
            slippage_bps=(pl.col("bps") * pl.col("quantity")).sum() / pl.col("quantity").sum(),
        )
        .sort("strategy")
    )
    sent = orders.filter(pl.col("reject_rule").is_null())
    ordered = float(sent["quantity"].sum()) if sent.height else 0.0
    ratio = float(sent["filled_quantity"].sum()) / ordered if ordered > 0 else None
    rejected = orders.filter(pl.col("reject_rule").is_not_null()).group_by("reject_rule").len().sort("reject_rule")
    last = pnl.row(-1, named=True) if pnl.height else {}
    totals = {
        "orders": orders.height,
        "fills": fills.height,
        "rejected": int(rejected["len"].sum()) if rejected.height else 0,
        "realized_pnl": last.get("realized_pnl", 0.0),
        "unrealized_pnl": last.get("unrealized_pnl", 0.0),
        "fees": last.get("fees", 0.0),
        "equity": last.get("equity"),
        "slippage_bps": float((priced["bps"] * priced["quantity"]).sum()) / float(priced["quantity"].sum())
        if priced.height
        else None,
        "open_positions_at_end": int((final["quantity"] != 0).sum()),
    }
    return PaperReport(by_strategy, slippage, ratio, dict(rejected.iter_rows()), totals)
