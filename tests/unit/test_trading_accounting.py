"""Average-cost positions and PnL; the cash identity after every fill (hand cases, properties,
and the fills of a real morning of BAC through the paper matcher)."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickforge.platform.contracts import Quote
from tickforge.platform.io.files import read_quotes, read_trades
from tickforge.trading.accounting import FeeSchedule, Ledger
from tickforge.trading.matching import PaperMatcher
from tickforge.trading.orders import Fill, Liquidity, Side, fill_id, new_order
from tickforge.trading.stream import market_events

T0 = 1381239900000


def f(n: int, side: str, qty: float, price: float, liquidity: str = "taker", symbol: str = "BAC") -> Fill:
    return Fill(fill_id("o", n), "o", symbol, Side(side), T0 + n, price, qty, Liquidity(liquidity))


def assert_identity(ledger: Ledger) -> None:
    scale = ledger.initial_capital + sum(abs(p.quantity) * (p.mark_price or 0) for p in ledger.positions())
    assert abs(ledger.identity_gap()) <= 1e-9 * scale


def test_average_cost_realized_pnl_and_a_flip_long_to_short():
    ledger = Ledger(100_000, FeeSchedule(taker_bps=1.0))
    ledger.apply_fill("sma", f(1, "buy", 100, 13.80))
    ledger.apply_fill("sma", f(2, "buy", 300, 13.84))  # average (1380 + 4152) / 400 = 13.83
    p = ledger.position("sma", "BAC")
    assert (p.quantity, p.average_cost) == (400, pytest.approx(13.83))
    effect = ledger.apply_fill("sma", f(3, "sell", 600, 13.90))  # closes 400 at +0.07, shorts 200 at 13.90
    assert effect.realized_pnl == pytest.approx(400 * 0.07)
    assert (p.quantity, p.average_cost) == (-200, 13.90)
    ledger.mark("BAC", 13.85)
    assert p.unrealized_pnl == pytest.approx(200 * 0.05)
    ledger.apply_fill("sma", f(4, "buy", 200, 13.86))  # covers the short at +0.04
    assert (p.quantity, p.average_cost) == (0, 0)
    assert p.realized_pnl == pytest.approx(28 + 8)
    notional = 1380 + 4152 + 600 * 13.90 + 200 * 13.86
    assert p.fees == pytest.approx(notional * 1e-4)
    assert ledger.cash == pytest.approx(100_000 + 36 - notional * 1e-4)
    assert_identity(ledger)


def test_positions_are_kept_per_strategy_and_symbol_and_fees_per_liquidity():
    ledger = Ledger(50_000, FeeSchedule(taker_bps=2.0, maker_bps=-0.5, per_share=0.001))
    ledger.apply_fill("sma", f(1, "buy", 100, 13.84))
    ledger.apply_fill("rsi", f(2, "sell", 100, 13.85, "maker"))
    ledger.apply_fill("rsi", f(3, "buy", 10, 167.40, "taker", symbol="SPY"))
    assert ledger.net_quantity("BAC") == 0
    assert ledger.position("rsi", "BAC").quantity == -100
    assert ledger.position("sma", "BAC").fees == pytest.approx(1384 * 2e-4 + 0.1)
    assert ledger.position("rsi", "BAC").fees == pytest.approx(-1385 * 0.5e-4 + 0.1)
    ledger.mark("BAC", 13.90)
    assert ledger.unrealized_pnl == pytest.approx(100 * 0.06 - 100 * 0.05 + 0)
    assert_identity(ledger)


def test_ledger_refuses_impossible_values():
    with pytest.raises(ValueError):
        Ledger(0)
    with pytest.raises(ValueError):
        Ledger(1000).mark("BAC", math.nan)
    with pytest.raises(ValueError):
        FeeSchedule(taker_bps=-1)


prices = st.decimals(min_value="0.01", max_value="1000", places=2).map(float)
fills = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["BAC", "SPY"]),
        st.sampled_from(["buy", "sell"]),
        st.integers(1, 5000).map(float),
        prices,
        st.sampled_from(["maker", "taker"]),
        st.none() | prices,
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(fills)
def test_identity_holds_after_every_fill(steps):
    ledger = Ledger(1_000_000, FeeSchedule(taker_bps=1.5, maker_bps=-0.2, per_share=0.0005))
    for n, (strategy, symbol, side, qty, price, liquidity, mark) in enumerate(steps, 1):
        ledger.apply_fill(strategy, f(n, side, qty, price, liquidity, symbol))
        assert_identity(ledger)
        if mark is not None:
            ledger.mark(symbol, mark)
            assert_identity(ledger)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 1000).map(float), prices), min_size=1, max_size=40
    )
)
def test_realized_pnl_of_a_round_trip_equals_the_cash_it_made(steps):
    # Without fees, once flat again the cash gained is exactly the realized PnL.
    ledger = Ledger(1_000_000)
    for n, (side, qty, price) in enumerate(steps, 1):
        ledger.apply_fill("s", f(n, side, qty, price))
    held = ledger.position("s", "BAC").quantity
    if held != 0:
        ledger.apply_fill("s", f(len(steps) + 1, "sell" if held > 0 else "buy", abs(held), steps[-1][2]))
    assert ledger.position("s", "BAC").quantity == 0
    assert ledger.cash - ledger.initial_capital == pytest.approx(ledger.realized_pnl, abs=1e-6)


def test_identity_over_a_real_morning_of_paper_fills(samples: Path):
    # 09:30-10:30 ET of the demo day: every 20 s a buy or sell, alternating marketable and resting
    # 100-lots, through the matcher; prints mark the book.
    window = (pl.col("ts_ms") >= 1381239000000) & (pl.col("ts_ms") < 1381242600000)
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data.filter(window)
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data.filter(window)
    matcher, ledger = PaperMatcher(), Ledger(100_000, FeeSchedule(taker_bps=1.0))
    last_quote: Quote | None = None
    next_decision, n, booked = 1381239000000, 0, 0
    for ev in market_events(quotes, trades, "BAC"):
        out = []
        if ev.ts_ms >= next_decision and last_quote is not None:
            n += 1
            side = "buy" if n % 2 else "sell"
            limit = None if n % 4 < 2 else (last_quote.bid if side == "buy" else last_quote.ask)
            out += matcher.submit(
                new_order(
                    client_order_id=f"o{n}",
                    strategy="s",
                    symbol="BAC",
                    side=side,
                    quantity=100 * (1 + n % 3),
                    decision_ts_ms=ev.ts_ms,
                    latency_ms=5,
                    limit_price=limit,
                )
            )
            next_decision += 20_000
        if isinstance(ev, Quote):
            last_quote = ev
            out += matcher.on_quote(ev)
        else:
            out += matcher.on_trade(ev)
            ledger.mark("BAC", ev.price)
        for e in out:
            if isinstance(e, Fill):
                ledger.apply_fill("s", e)
                booked += 1
                assert_identity(ledger)
    assert booked > 100
    assert_identity(ledger)
