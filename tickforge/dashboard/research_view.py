"""What the research page shows, as plain functions of the research tables: cohort statistics,
an equity chart, a parameter heatmap and the scorecard summary."""

from __future__ import annotations

import json

import altair as alt
import polars as pl

EQUITY_COLOR = "#1f77b4"


def cohorts_table(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per strategy x timeframe cohort: rows scored, rows through the gates, best score,
    median Sharpe and deflated Sharpe, best in-sample return."""
    if scores.is_empty():
        return pl.DataFrame(schema={"strategy": pl.String, "timeframe": pl.String})
    return (
        scores.group_by("strategy", "timeframe")
        .agg(
            rows=pl.len(),
            passing=pl.col("gate").is_null().sum(),
            symbols=pl.col("symbol").n_unique(),
            best_score=pl.col("score").max().round(3),
            median_sharpe=pl.col("sharpe").median().round(3),
            median_dsr=pl.col("dsr").median().round(3),
            best_return=pl.col("total_return").max().round(3),
        )
        .sort("strategy", "timeframe")
    )


def pick_label(pick: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in json.loads(pick["params"]).items())
    return f"{pick['symbol']} · {pick['strategy']} · {pick['timeframe']} · {params}"


def picks_table(picks: pl.DataFrame) -> pl.DataFrame:
    return picks.select(
        "symbol",
        "strategy",
        "timeframe",
        "params",
        "bucket",
        pl.col("weight").round(4),
        pl.col("score").round(3),
        pl.col("dsr").round(4),
        pl.col("sharpe").round(3),
        pl.col("total_return").round(4),
        pl.col("max_drawdown").round(4),
    )


def equity_chart(equity: pl.DataFrame, width: int = 900) -> alt.Chart:
    data = equity.with_columns(time=pl.from_epoch("window_start", time_unit="ms")).select("time", "equity", "position")
    return (
        alt.Chart(data.to_pandas())
        .mark_line(color=EQUITY_COLOR, strokeWidth=1.5)
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y("equity:Q", scale=alt.Scale(zero=False)),
            tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"), "equity:Q", "position:Q"],
        )
        .properties(height=260, width=width)
    )


def numeric_axes(scores: pl.DataFrame, strategy: str) -> list[str]:
    """The parameters of a strategy that take more than one numeric value in the scores."""
    rows = [json.loads(p) for p in scores.filter(pl.col("strategy") == strategy)["params"].unique().to_list()]
    names = sorted({k for r in rows for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return [n for n in names if len({r.get(n) for r in rows}) > 1]


def heatmap_frame(scores: pl.DataFrame, strategy: str, x: str, y: str, metric: str, symbol: str | None) -> pl.DataFrame:
    """``metric`` per (x, y) parameter pair: the symbol's, or the median over symbols (and over the other parameters)."""
    rows = scores.filter(pl.col("strategy") == strategy)
    if symbol is not None:
        rows = rows.filter(pl.col("symbol") == symbol)
    params = [json.loads(p) for p in rows["params"].to_list()]
    frame = pl.DataFrame(
        {x: [p.get(x) for p in params], y: [p.get(y) for p in params], metric: rows[metric].to_list()},
        schema={x: pl.Float64, y: pl.Float64, metric: pl.Float64},
    )
    return frame.group_by(x, y).agg(pl.col(metric).median()).sort(x, y)


def heatmap(frame: pl.DataFrame, x: str, y: str, metric: str, width: int = 560) -> alt.Chart:
    return (
        alt.Chart(frame.to_pandas())
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O", title=x),
            y=alt.Y(f"{y}:O", title=y, sort="descending"),
            color=alt.Color(f"{metric}:Q", scale=alt.Scale(scheme="redyellowgreen", domainMid=0)),
            tooltip=[f"{x}:O", f"{y}:O", alt.Tooltip(f"{metric}:Q", format=".3f")],
        )
        .properties(width=width, height=360)
    )


def scorecard_summary(card: pl.DataFrame) -> pl.DataFrame:
    """Per pick day: picks, how many are realized, hit rate and the equal-weight portfolio's return."""
    if card.is_empty():
        return pl.DataFrame(schema={"day": pl.Date, "picks": pl.UInt32})
    return (
        card.group_by("day")
        .agg(
            picks=pl.len(),
            realized=pl.col("complete").sum(),
            hit_rate=(pl.col("realized_return") > 0).filter(pl.col("complete")).mean().round(3),
            portfolio_return=pl.col("weighted_return").filter(pl.col("complete")).sum().round(5),
        )
        .sort("day", descending=True)
    )
