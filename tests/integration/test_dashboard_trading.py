"""The live view's trading panel on the OMS tables the paper path wrote, looked at by a real
headless Chromium (Debian's ``chromium``).

The demo day's golden bars (SPY, BAC, AIG, built from the repository's sample) go into PostgreSQL;
``tickforge paper replay --postgres`` trades the day's picks on paper and stores the OMS. The
panel must show BAC's positions (booked from the stored fills as the replay's ledger booked them),
orders and fills in New York time, and say plainly that AIG, which no pick traded, has no trading
data.
"""

from __future__ import annotations

import time

import polars as pl
import pytest

from tests.integration.test_dagster_nightly import _store_golden_bars
from tests.integration.test_dashboard_live import CHROMIUM, Chromium, start_dashboard, stop_dashboard
from tests.integration.test_trading_store import TRADES, _replay
from tickforge.dashboard.history import History
from tickforge.dashboard.trading import TradingBook
from tickforge.dashboard.view import exchange_times
from tickforge.platform.io.files import read_trades

pytestmark = pytest.mark.integration


def test_trading_panel_shows_orders_fills_and_positions_of_the_symbol(settings, samples, tmp_path):
    assert CHROMIUM is not None, "needs Debian's chromium: apt-get install -y chromium"
    _store_golden_bars(settings, read_trades(samples / TRADES))
    _replay(samples, tmp_path)  # the demo day's picks (BAC and SPY) on paper, the OMS into PostgreSQL
    out = tmp_path / "out"
    orders = pl.read_parquet(out / "orders.parquet").filter(pl.col("symbol") == "BAC")
    fills = pl.read_parquet(out / "fills.parquet").filter(pl.col("symbol") == "BAC")
    final = pl.read_parquet(out / "positions.parquet").filter(pl.col("fill_id").is_null(), pl.col("symbol") == "BAC")
    final = final.sort("book")
    assert fills.height > 20 and final.height == 2

    # What the panel reads: the stored orders and fills of BAC, and the replay's positions booked again.
    book = TradingBook(settings)
    accounts, bac = book.symbol("BAC", mark_price=float(final["mark_price"][0]))
    assert accounts == ["paper-replay"] and bac is not None
    assert sorted(bac.orders["client_order_id"]) == sorted(orders["client_order_id"])
    assert sorted(bac.fills["fill_id"]) == sorted(fills["fill_id"])
    assert bac.orders["decision_ts_ms"].is_sorted(descending=True)
    assert bac.positions["book"].to_list() == final["book"].to_list()
    for column in ("quantity", "realized_pnl", "unrealized_pnl", "fees"):
        assert bac.positions[column].to_list() == pytest.approx(final[column].to_list(), abs=1e-6), column
    assert book.symbol("AIG") == ([], None)

    latest = bac.orders.row(0, named=True)
    decided = pl.select(exchange_times(pl.lit(latest["decision_ts_ms"], pl.Int64), "America/New_York")).item()
    assert decided.endswith(" EDT")
    dashboard, url = start_dashboard(tmp_path)
    browser = None
    try:
        browser = Chromium(tmp_path, height=2600)
        started = time.monotonic()
        browser.call("Page.navigate", url=f"{url}/?symbol=BAC&timeframe=1m")
        rendered = browser.wait_for(
            "document.body.innerText.includes('Trading · BAC') && "
            f"document.body.innerText.includes('{bac.orders.height} orders · {bac.fills.height} fills') && "
            f"document.body.innerText.includes('{decided}')",
            120,
        )
        text = browser.evaluate("document.body.innerText")
        browser.screenshot(tmp_path / "trading.png")
        assert rendered, f"the trading panel did not render: {text[-3_000:]}"
        for label in (
            "Positions",
            "Orders (latest 20 first)",
            "Fills (latest 20 first)",
            "account paper-replay",
            latest["client_order_id"],
            *final["book"].to_list(),
        ):
            assert label in text, label

        # On 5 m bars the 120 shown reach back into the session: each fill there is a triangle on its bar.
        shown = History(settings).bars("BAC", "5m", 120)
        inside = fills.filter(pl.col("ts_ms") >= shown["window_start"].min()).height
        assert inside > 10
        browser.call("Page.navigate", url=f"{url}/?symbol=BAC&timeframe=5m")
        marked = browser.wait_for(
            "document.body.innerText.includes('BAC · 5m') && "
            f"document.querySelectorAll('.vega-embed g.mark-symbol.role-mark path').length >= {inside}",
            60,
        )
        symbols = browser.evaluate("document.querySelectorAll('.vega-embed g.mark-symbol.role-mark path').length")
        browser.screenshot(tmp_path / "fills.png")
        assert marked and symbols == inside, symbols  # the only point marks are the fills (legends aside)

        browser.call("Page.navigate", url=f"{url}/?symbol=AIG&timeframe=1m")
        empty = browser.wait_for("document.body.innerText.includes('No trading data for AIG')", 60)
        assert empty, browser.evaluate("document.body.innerText")[-2_000:]
        print(
            f"trading panel rendered {time.monotonic() - started:.1f}s after navigation: "
            f"{bac.orders.height} BAC orders, {bac.fills.height} fills"
        )
    finally:
        if browser is not None:
            browser.close()
        stop_dashboard(dashboard)
