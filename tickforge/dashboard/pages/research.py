"""Research page of ``tickforge dashboard`` (Streamlit multipage: beside the live view).

For a pick day: the strategy x timeframe cohorts of the scored sweeps, the picks, the equity curve
of a chosen pick, a parameter heatmap (e.g. Sharpe over fast x slow), and the scorecard of past
picks. Everything is read from the research tables in PostgreSQL.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from tickforge.dashboard import research_data, research_view

st.set_page_config(page_title="Tickforge research", layout="wide")


@st.cache_resource(show_spinner=False)
def _source() -> research_data.ResearchSource:
    from tickforge.platform.settings import load_settings

    return research_data.ResearchSource.from_settings(load_settings())


src = _source()
days = src.pick_days()
st.header("Tickforge research")
if not days:
    st.info("No picks yet: materialize the research assets (the nightly or the research job).")
    st.stop()
with st.sidebar:
    day = st.selectbox("Pick day", days, key="research_day")
scores, picks = src.scores(day), src.picks(day)

st.subheader(f"Cohorts · in-sample sweeps for {day}")
st.table(research_view.cohorts_table(scores).to_pandas().set_index(["strategy", "timeframe"]), border="horizontal")

st.subheader(f"Picks for {day}")
if picks.is_empty():
    st.caption("No candidate passed the gates for this day.")
else:
    st.table(research_view.picks_table(picks).to_pandas(), border="horizontal")
    rows = picks.to_dicts()
    chosen = st.selectbox(
        "Equity curve of",
        range(len(rows)),
        format_func=lambda i: research_view.pick_label(rows[i]),
        key="research_pick",
    )
    equity = src.equity(rows[chosen])
    st.altair_chart(research_view.equity_chart(equity), key="equity_chart")
    st.caption(f"{equity.height} bars before {day} · the pick's rule on the symbol's history, costs included")

st.subheader("Parameter heatmap")
strategies = [
    s for s in sorted(scores["strategy"].unique().to_list()) if len(research_view.numeric_axes(scores, s)) >= 2
]
if strategies:
    cols = st.columns(4)
    strategy = cols[0].selectbox(
        "Strategy",
        strategies,
        index=strategies.index("ema_cross") if "ema_cross" in strategies else 0,
        key="heat_strategy",
    )
    axes = research_view.numeric_axes(scores, strategy)
    x = cols[1].selectbox("x", axes, index=0, key="heat_x")
    y = cols[2].selectbox("y", [a for a in axes if a != x], index=0, key="heat_y")
    symbols = sorted(scores.filter(scores["strategy"] == strategy)["symbol"].unique().to_list())
    symbol = cols[3].selectbox("Symbol", ["median over symbols", *symbols], key="heat_symbol")
    metric = st.radio("Metric", ["sharpe", "total_return", "score", "dsr"], horizontal=True, key="heat_metric")
    frame = research_view.heatmap_frame(scores, strategy, x, y, metric, None if symbol.startswith("median") else symbol)
    st.altair_chart(research_view.heatmap(frame, x, y, metric), key="heatmap")
else:
    st.caption("No strategy with two numeric parameters was swept for this day.")

st.subheader("Scorecard")
card = src.scorecard()
if card.is_empty():
    st.caption("No past picks yet.")
else:
    day_text = pl.col("day").cast(pl.String)
    st.table(research_view.scorecard_summary(card).head(30).with_columns(day_text).to_pandas(), border="horizontal")
    recent = card.sort("day", "symbol", descending=[True, False]).head(50)
    st.table(
        recent.select(
            day_text,
            "symbol",
            "strategy",
            "timeframe",
            "params",
            "weight",
            "realized_return",
            "realized_trades",
            "complete",
        ).to_pandas(),
        border="horizontal",
    )
