"""Tickforge live view (Streamlit): ``tickforge dashboard`` serves it on 127.0.0.1.

For a chosen symbol and timeframe: candlesticks with volume and indicator overlays, a MACD and an
RSI pane, the latest bar, pipeline health badges and the pair watch table. The live part is a
fragment re-run every refresh interval while auto-refresh is on; the sidebar widgets are keyed, so
a refresh keeps the selection. ``?symbol=...&timeframe=...`` preselects (deep links); without
one, the most active symbol shows. Times are the exchange's (the zone of the symbol's class).
"""

from __future__ import annotations

import streamlit as st

from tickforge.dashboard import source as sources
from tickforge.dashboard import view
from tickforge.dashboard.cache import wall_ms
from tickforge.dashboard.feed import TIMEFRAMES
from tickforge.dashboard.trading import SymbolTrading


@st.cache_resource(show_spinner=False)
def _shared_source() -> sources.DashboardSource:
    """One cache and one Kafka feed thread per server process, shared by every browser session."""
    from tickforge.platform.settings import load_settings

    return sources.build_source(load_settings())


def source() -> sources.DashboardSource:
    return sources.overridden_source() or _shared_source()


st.set_page_config(page_title="Tickforge live", layout="wide")
src = source()
symbols = src.symbols()
st.session_state["_symbols"] = symbols

params = st.query_params
if symbols and not st.session_state.get("_symbol_chosen"):
    # Until someone picks one, the symbol shown is the deep-linked one once it has data, else the
    # most active one (so a first look lands on a busy chart, not on the alphabetically first).
    if params.get("symbol") in symbols:
        st.session_state["symbol"] = params["symbol"]
        st.session_state["_symbol_chosen"] = True
    else:
        active = src.cache.most_active()
        st.session_state["symbol"] = active if active in symbols else symbols[0]
if "timeframe" not in st.session_state and params.get("timeframe") in TIMEFRAMES:
    st.session_state["timeframe"] = params["timeframe"]

with st.sidebar:
    st.header("Tickforge live")
    if symbols:
        st.selectbox(
            "Symbol",
            symbols,
            key="symbol",
            on_change=lambda: st.session_state.update(_symbol_chosen=True),
            help="The most active symbol (most trades in the last hour) until you pick one.",
        )
    else:
        st.info("Waiting for data: no bars on Kafka or in PostgreSQL yet.")
    st.radio("Timeframe", TIMEFRAMES, key="timeframe", horizontal=True)
    st.toggle("Auto-refresh", value=True, key="auto")
    st.number_input("Refresh every (s)", min_value=0.5, max_value=60.0, value=1.0, step=0.5, key="interval")
    # 120 candles on the chart's 900 px leave each about 5 px of body: readable at a glance.
    st.slider("Bars shown", min_value=30, max_value=1_000, value=120, step=10, key="window")


def _fmt(value: object) -> str:
    if value is None:
        return "–"  # not ready
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"
    return str(value)


run_every = st.session_state["interval"] if st.session_state["auto"] else None


@st.fragment(run_every=run_every)
def live_view() -> None:
    if src.symbols() != st.session_state.get("_symbols"):
        st.rerun(scope="app")  # new symbols: the sidebar (outside this fragment) lists them
    symbol = st.session_state.get("symbol")
    timeframe = st.session_state["timeframe"]
    now = wall_ms()
    error = src.feed_error()
    if error:
        st.error(f"Kafka feed stopped: {error}")

    cols = st.columns(4)
    for col, badge in zip(cols, view.badges(src.cache.health(), now), strict=True):
        with col:
            st.caption(badge.label, help=badge.help)
            st.badge(badge.value, color=badge.color, help=badge.help)

    if not symbol:
        return
    limit = st.session_state["window"]
    live = src.cache.bars(symbol, timeframe)
    history = None
    if src.history is not None:
        try:
            # 1 m / 5 m: enough history for the session's indicators; 1 s: what the window shows.
            history = src.history.bars(symbol, timeframe, max(limit, 1_500) if timeframe != "1s" else limit)
        except Exception as exc:  # PostgreSQL down: the live data still shows
            st.warning(f"history unavailable: {exc}")
    bars = view.merge_bars(history if history is not None else live.head(0), live, max(limit, 1_500))
    signals = src.cache.signals(symbol) if timeframe == "1s" else None
    frame = view.with_indicators(bars, timeframe, symbol, src.session_tz, signals).tail(limit)
    zone = view.exchange_zone(src.session_tz, symbol)
    trading = read_trading(symbol, None if frame.is_empty() else float(frame["close"][-1]))
    fills = trading[1].fills if isinstance(trading, tuple) and trading[1] is not None else None

    st.subheader(f"{symbol} · {timeframe}")
    if frame.is_empty():
        st.info(f"No {timeframe} bars for {symbol} yet.")
    else:
        st.altair_chart(view.price_chart(frame, zone, fills=fills), key="price_chart")
        st.caption(
            f"{frame.height} bars · live cache {live.height} · "
            f"history {0 if history is None else history.height} · "
            f"times in {zone} (the exchange's time) · one slot per bar, gaps without trades closed up"
        )

    left, right = st.columns([1, 2])
    with left:
        st.markdown("**Latest bar**")
        details = view.latest_details(frame, zone)
        if details:
            st.table({"field": list(details), "value": [_fmt(v) for v in details.values()]}, border="horizontal")
    with right:
        st.markdown("**Pair watch** (1 m bars)")
        table = view.pairs_table(src.cache.pairs(), src.session_tz)
        if table.is_empty():
            st.caption("No pair statistics yet (minimum history not met).")
        else:
            st.table(table.to_pandas().set_index("pair"), border="horizontal")

    trading_panel(symbol, zone, trading)


TRADING_ROWS = 20  # orders and fills listed (the caption counts them all)


def read_trading(symbol: str, mark_price: float | None) -> tuple[list[str], SymbolTrading | None] | str | None:
    """The symbol's trading in the OMS tables: (accounts, what the chosen one did), an error
    text when PostgreSQL cannot answer, None when this view reads no OMS tables."""
    if src.trading is None:
        return None
    try:
        return src.trading.symbol(symbol, st.session_state.get(f"trading_account:{symbol}"), mark_price)
    except Exception as exc:  # PostgreSQL down: the market data still shows
        return f"{type(exc).__name__}: {exc}"


def trading_panel(symbol: str, zone: str, read: tuple[list[str], SymbolTrading | None] | str | None) -> None:
    """Orders, fills and positions of the symbol from the OMS tables of the paper path."""
    st.markdown(f"**Trading** · {symbol} (orders, fills and positions in the OMS tables)")
    if read is None:
        st.caption("No trading data: this view reads no OMS tables.")
        return
    if isinstance(read, str):
        st.warning(f"trading data unavailable: {read}")
        return
    accounts, trading = read
    if trading is None:
        st.caption(
            f"No trading data for {symbol}: no orders in the OMS tables yet "
            "(`tickforge paper replay --postgres`, or the paper workers, write them)."
        )
        return
    if len(accounts) > 1:
        st.selectbox("Account", accounts, index=accounts.index(trading.account), key=f"trading_account:{symbol}")
    st.caption(
        f"account {trading.account} · {trading.orders.height} orders · {trading.fills.height} fills · "
        f"times in {zone} · positions marked at the latest bar's close"
    )
    st.markdown("Positions")
    st.table(trading.positions.to_pandas().set_index("book"), border="horizontal")
    st.markdown(f"Orders (latest {min(trading.orders.height, TRADING_ROWS)} first)")
    st.table(view.orders_table(trading.orders, zone, TRADING_ROWS).to_pandas(), border="horizontal")
    st.markdown(f"Fills (latest {min(trading.fills.height, TRADING_ROWS)} first)")
    st.table(view.fills_table(trading.fills, zone, TRADING_ROWS).to_pandas(), border="horizontal")


live_view()
