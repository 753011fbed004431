"""Paper matcher against hand-computed books built from real BAC rows of 2013-10-08.

The opening stretch of the demo day (04:00 to 09:31:19.510 ET: quote rows 0-63 and the BAC prints
in between) is thin: sizes of a few hundred shares, a print at a bid that is moving away, and
locked quotes at 13.84. Each test states the book its expected fills are computed from. At the
same millisecond quotes come before prints (``tickforge.trading.stream``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from tickforge.platform.contracts import Quote, Trade
from tickforge.platform.io.files import read_quotes, read_trades
from tickforge.trading.events import (
    CancelReason,
    CancelRejected,
    CancelRejectReason,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
)
from tickforge.trading.matching import CancelModel, MatchingConfig, PaperMatcher
from tickforge.trading.oms import OrderManager
from tickforge.trading.orders import Fill, Liquidity, Order, new_order
from tickforge.trading.stream import MarketEvent, market_events

OPENING_END_MS = 1381231879511  # just after quote row 63 (09:31:19.510 ET)


@pytest.fixture(scope="module")
def opening(samples: Path) -> list[MarketEvent]:
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data
    window = pl.col("ts_ms") < OPENING_END_MS
    return market_events(quotes.filter(window), trades.filter(window), "BAC")


def order(
    coid: str,
    side: str,
    qty: float,
    decision_ms: int,
    limit: float | None = None,
    tif: str = "DAY",
    latency_ms: int = 0,
) -> Order:
    return new_order(
        client_order_id=coid,
        strategy="s",
        symbol="BAC",
        side=side,
        quantity=qty,
        decision_ts_ms=decision_ms,
        latency_ms=latency_ms,
        limit_price=limit,
        time_in_force=tif,
    )


def run(
    matcher: PaperMatcher,
    events: list[MarketEvent],
    controls: list[tuple[int, Order | str]] = (),
    until_ms: int | None = None,
) -> list:
    """Feed the stream; each control (an order, or a cancel id with its arrival) is sent
    when the stream reaches its send time, as a live sender would."""
    pending = sorted(controls, key=lambda c: c[0])
    out: list = []
    for ev in events:
        if until_ms is not None and ev.ts_ms >= until_ms:
            break
        while pending and pending[0][0] <= ev.ts_ms:
            send_ms, item = pending.pop(0)
            out += matcher.submit(item) if isinstance(item, Order) else matcher.cancel(item[0], item[1])
        out += matcher.on_quote(ev) if isinstance(ev, Quote) else matcher.on_trade(ev)
    return out


def fills(events: list, coid: str | None = None) -> list[tuple[int, float, float, str]]:
    return [
        (f.ts_ms, f.price, f.quantity, str(f.liquidity))
        for f in events
        if isinstance(f, Fill) and (coid is None or f.client_order_id == coid)
    ]


def of(events: list, kind: type, coid: str) -> list:
    return [e for e in events if isinstance(e, kind) and e.client_order_id == coid]


# ------------------------------------------------------------------ queue position


def test_queue_ahead_is_consumed_by_prints_then_the_order_fills_in_parts(opening):
    # Arrives after row 45 (bid 13.84 x 300): 300 shares ahead. Rows 46-47 grow the bid to 600
    # (joiners behind). Row 48 locks 13.84/13.84; prints at 13.84: 300 (row 248) eats the queue
    # ahead, 300 (row 249) fills 300 of 400; the level then shows less than before but nobody is
    # ahead any more, and the print of 300 at ...298 (row 250) fills the last 100.
    m = PaperMatcher()
    buy = order("q1", "buy", 400, 1381231800262, limit=13.84)
    out = run(m, opening, [(buy.decision_ts_ms, buy)], until_ms=1381231857296)
    assert m.queue_position("q1").ahead == 300
    out += run(m, [e for e in opening if e.ts_ms >= 1381231857296])
    assert fills(out, "q1") == [(1381231857296, 13.84, 300.0, "maker"), (1381231857298, 13.84, 100.0, "maker")]
    assert of(out, OrderAccepted, "q1") == [OrderAccepted("q1", 1381231800262)]
    assert m.working_orders() == []


def test_a_new_best_level_has_nothing_ahead_and_joiners_queue_behind(opening):
    # Arrives after row 18 (bid 13.84 x 1300): 1300 ahead. Row 19 (2300) is growth, row 20 back
    # to 1300 is 1000 canceled: pro rata 1300 x 1300/2300 ahead. Row 23 moves the bid to 13.79:
    # nobody left at 13.84, ahead 0; when the bid comes back to 13.84 (row 44, 300) those are
    # behind us. The first print at 13.84 (row 248, 300 shares) fills all 200.
    m = PaperMatcher()
    buy = order("a1", "buy", 200, 1381229355200, limit=13.84)
    run(m, opening, [(buy.decision_ts_ms, buy)], until_ms=1381229388675 + 1)
    assert m.queue_position("a1").ahead == 1300
    run(m, [e for e in opening if 1381229388675 < e.ts_ms <= 1381229415146])
    assert m.queue_position("a1").ahead == 735  # 734.8 rounded up to whole shares
    run(m, [e for e in opening if 1381229415146 < e.ts_ms <= 1381229655007])
    assert m.queue_position("a1").ahead == 0
    out = run(m, [e for e in opening if e.ts_ms > 1381229655007])
    assert fills(out, "a1") == [(1381231857296, 13.84, 200.0, "maker")]


def test_from_back_cancel_model_keeps_the_queue_ahead_when_the_level_shrinks_to_it(opening):
    m = PaperMatcher(MatchingConfig(cancel_model=CancelModel.FROM_BACK))
    buy = order("a1", "buy", 200, 1381229355200, limit=13.84)
    run(m, opening, [(buy.decision_ts_ms, buy)], until_ms=1381229415146 + 1)
    assert m.queue_position("a1").ahead == 1300  # 2300 -> 1300: the 1000 canceled were behind


def test_two_paper_orders_at_one_level_keep_their_fifo_order(opening):
    # Both join 13.84 after row 45 (300 ahead of the first; the second is behind 300 + the first).
    # Print 1 (300) clears the market queue; print 2 (300) fills the first 100 and the second 100.
    m = PaperMatcher()
    o1 = order("f1", "buy", 100, 1381231800262, limit=13.84)
    o2 = order("f2", "buy", 100, 1381231800263, limit=13.84)
    out = run(m, opening, [(o1.decision_ts_ms, o1), (o2.decision_ts_ms, o2)], until_ms=1381231857296)
    assert (m.queue_position("f1").ahead, m.queue_position("f2").ahead) == (300, 400)
    out += run(m, [e for e in opening if e.ts_ms >= 1381231857296])
    assert fills(out) == [(1381231857296, 13.84, 100.0, "maker"), (1381231857296, 13.84, 100.0, "maker")]
    assert [f.client_order_id for f in out if isinstance(f, Fill)] == ["f1", "f2"]


# ------------------------------------------------------------------ prints through a level


def test_a_print_through_the_level_fills_up_to_its_size_best_price_first(opening):
    # Bid 13.80 x 1000 until 04:59:08.450 ET, when the bid drops to 13.77 and 1000 print at 13.80
    # (row 122). A buy at 13.81 (above the bid: nothing ahead) is traded through: 1000 of 1500.
    # A buy at 13.80 joined behind 1000 gets nothing: the print went to the better-priced order.
    m = PaperMatcher()
    b1 = order("t1", "buy", 1500, 1381226000000, limit=13.81)
    b2 = order("t2", "buy", 500, 1381226000000, limit=13.80)
    out = run(m, opening, [(b1.decision_ts_ms, b1), (b2.decision_ts_ms, b2)], until_ms=1381229355178)
    assert fills(out) == [(1381226348450, 13.81, 1000.0, "maker")]
    assert m.queue_position("t1").remaining == 500
    assert m.queue_position("t2").ahead == 0  # the bid left 13.80: nobody ahead any more


# ------------------------------------------------------------------ marketable orders


def test_a_marketable_limit_takes_the_displayed_size_then_rests_at_its_limit(opening):
    # Row 7: ask 13.85 x 500. A buy 800 at 13.85 takes 500 at 13.85; row 8 moves the ask to 13.92,
    # so the rest (300) rests at 13.85, above the 13.80 bid (nothing ahead), and the print of 1000
    # at 13.80 (row 122) trades through it.
    m = PaperMatcher()
    buy = order("m1", "buy", 800, 1381225205980, limit=13.85)
    out = run(m, opening, [(buy.decision_ts_ms, buy)], until_ms=1381229355178)
    assert fills(out, "m1") == [(1381225205980, 13.85, 500.0, "taker"), (1381226348450, 13.85, 300.0, "maker")]


def test_ioc_remainder_is_canceled(opening):
    m = PaperMatcher()
    buy = order("i1", "buy", 800, 1381225205980, limit=13.85, tif="IOC")
    out = run(m, opening, [(buy.decision_ts_ms, buy)], until_ms=1381229355178)
    assert fills(out, "i1") == [(1381225205980, 13.85, 500.0, "taker")]
    assert of(out, OrderCanceled, "i1") == [OrderCanceled("i1", 1381225205980, CancelReason.IOC_REMAINDER)]


def test_a_market_order_takes_each_quote_at_most_once(opening):
    # Two market buys reach the book on the same quote (row 7, ask 13.85 x 500): the first takes
    # 500 of 600, the second nothing; on row 8 (ask 13.92 x 1500) they take 100 and 600.
    m = PaperMatcher()
    b1 = order("k1", "buy", 600, 1381225205980)
    b2 = order("k2", "buy", 600, 1381225205981)
    out = run(m, opening, [(b1.decision_ts_ms, b1), (b2.decision_ts_ms, b2)], until_ms=1381225356563)
    assert fills(out, "k1") == [(1381225205980, 13.85, 500.0, "taker"), (1381225356562, 13.92, 100.0, "taker")]
    assert fills(out, "k2") == [(1381225356562, 13.92, 600.0, "taker")]


def test_latency_decides_which_quote_an_order_meets(opening):
    # Decided 3 ms before row 7: with no latency it meets row 6 (ask 13.92 x 500), with 5 ms row 7
    # (ask 13.85 x 500). Until arrival the book has not seen it.
    decided = 1381225205975
    for latency, expected in ((0, 13.92), (5, 13.85)):
        m = PaperMatcher()
        buy = order("l1", "buy", 100, decided, tif="IOC", latency_ms=latency)
        out = run(m, opening, [(decided, buy)], until_ms=1381225356563)
        assert fills(out, "l1") == [(decided + latency, expected, 100.0, "taker")]
    m = PaperMatcher()
    assert m.submit(order("l2", "buy", 100, decided, latency_ms=5)) == []
    assert (
        m.on_quote(Quote(ts_ms=decided + 5, symbol="BAC", bid=13.80, ask=13.85, bid_size=1000.0, ask_size=500.0)) == []
    )


# ------------------------------------------------------------------ locked and crossed books


def test_no_fill_at_a_locked_quote_real_rows(opening, samples):
    # Row 48 (09:30:57.296 ET) is locked 13.84/13.84 (the sample holds 9,726 locked rows and no
    # crossed one). A market buy reaching it waits; row 49 is still locked; row 50 (13.83/13.84
    # x 100) is the first usable quote: 100; row 51 (x 300): 300; row 52 (x 700): the last 100.
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    locked = quotes.filter(pl.col("row").is_in([48, 49]))
    assert (locked["bid"] >= locked["ask"]).all()
    m = PaperMatcher()
    buy = order("x1", "buy", 500, 1381231857297)
    ioc = order("x2", "buy", 500, 1381231857297, tif="IOC")
    out = run(m, opening, [(buy.decision_ts_ms, buy), (ioc.decision_ts_ms, ioc)])
    assert fills(out, "x1") == [
        (1381231857298, 13.84, 100.0, "taker"),
        (1381231857298, 13.84, 300.0, "taker"),
        (1381231857298, 13.84, 100.0, "taker"),
    ]
    assert of(out, OrderCanceled, "x2") == [OrderCanceled("x2", 1381231857297, CancelReason.NO_LIQUIDITY)]


# Verbatim data rows 849043-849050 of the shared five-day BAC NBBO file (2013-10-10, 07:16 ET): row
# 849047 is crossed (bid 13.98 > ask 13.97). The 10-08 sample has no crossed row.
CROSSED_ROWS = """\
ts_ms,symbol,bid_price,bid_size,bid_exchange,ask_price,ask_size,ask_exchange,condition,suspicious
1381403640472,BAC,14.00,1300,P,14.01,900,P,1,0
1381403670900,BAC,14.00,1600,P,14.01,900,P,1,0
1381403759511,BAC,14.00,600,P,14.01,900,P,1,0
1381403771591,BAC,13.98,1100,P,14.01,900,P,1,0
1381403790143,BAC,13.98,800,Q,13.97,500,P,1,0
1381403790145,BAC,13.96,2200,P,13.97,500,P,1,0
1381403793285,BAC,13.96,2200,P,14.01,900,P,1,0
1381403800362,BAC,13.97,2000,P,14.01,900,P,1,0
"""


@pytest.fixture()
def crossed(tmp_path) -> list[MarketEvent]:
    path = tmp_path / "crossed.csv"
    path.write_text(CROSSED_ROWS)
    quotes = read_quotes(path).data
    return market_events(
        quotes, pl.DataFrame(schema={"ts_ms": pl.Int64, "symbol": pl.String, "price": pl.Float64, "size": pl.Float64})
    )


def test_no_fill_at_a_crossed_quote_real_rows(crossed):
    # A buy at 13.97 reaching the crossed quote (ask 13.97 x 500 under a 13.98 bid) waits; the next
    # quote (13.96/13.97 x 500) is usable: 500 at 13.97. The ask then leaves (14.01): the rest
    # rests at 13.97 above the 13.96 bid, nothing ahead, and stays first when the bid joins it.
    # A sell IOC at 13.98 against the crossed bid is canceled, not filled.
    m = PaperMatcher()
    buy = order("c1", "buy", 1000, 1381403790144, limit=13.97)
    sell = order("c2", "sell", 100, 1381403790144, limit=13.98, tif="IOC")
    out = run(m, crossed, [(buy.decision_ts_ms, buy), (sell.decision_ts_ms, sell)])
    assert fills(out, "c1") == [(1381403790145, 13.97, 500.0, "taker")]
    assert of(out, OrderCanceled, "c2") == [OrderCanceled("c2", 1381403790144, CancelReason.NO_LIQUIDITY)]
    assert m.queue_position("c1").ahead == 0 and m.queue_position("c1").remaining == 500


@pytest.mark.full_data
def test_crossed_rows_are_the_shared_files_rows(shared_data):
    with gzip.open(shared_data / "us_equity_nbbo_BAC_2013-10-07_2013-10-11.csv.gz", "rt") as f:
        lines = [next(f)] + [line for i, line in enumerate(f) if 849043 <= i <= 849050]
    assert "".join(lines) == CROSSED_ROWS


# ------------------------------------------------------------------ cancels


def test_a_cancel_racing_a_fill_is_decided_by_event_time(opening):
    # The queue-position order above fills 300 at the print of 09:30:57.296 (row 249).
    def scenario(cancel_ms: int) -> list:
        m = PaperMatcher()
        buy = order("r1", "buy", 400, 1381231800262, limit=13.84)
        return run(m, opening, [(buy.decision_ts_ms, buy), (cancel_ms, ("r1", cancel_ms))])

    early = scenario(1381231857295)  # the cancel arrives first: no fill
    assert fills(early, "r1") == []
    assert of(early, OrderCanceled, "r1") == [OrderCanceled("r1", 1381231857295, CancelReason.REQUESTED)]
    tie = scenario(1381231857296)  # same ms: the print wins, the rest is canceled
    assert fills(tie, "r1") == [(1381231857296, 13.84, 300.0, "maker")]
    assert of(tie, OrderCanceled, "r1") == [OrderCanceled("r1", 1381231857296, CancelReason.REQUESTED)]
    late = scenario(1381231857299)  # after the last fill: nothing left to cancel
    assert sum(f[2] for f in fills(late, "r1")) == 400
    assert of(late, CancelRejected, "r1") == [CancelRejected("r1", 1381231857299, CancelRejectReason.ALREADY_CLOSED)]


def test_unknown_cancel_duplicate_submit_and_session_end(opening):
    m = PaperMatcher()
    assert m.cancel("nope", 1381219200000) == []
    buy = order("d1", "buy", 100, 1381219200100, limit=13.70)
    late = order("d2", "buy", 100, 1381231879000, limit=13.70)
    out = run(m, opening, [(buy.decision_ts_ms, buy), (buy.decision_ts_ms, buy)])
    assert of(out, CancelRejected, "nope") == [CancelRejected("nope", 1381219200000, CancelRejectReason.UNKNOWN_ORDER)]
    assert m.duplicates == 1 and len(of(out, OrderAccepted, "d1")) == 1
    m.submit(order("d3", "buy", 100, 1381231879600, limit=13.70))
    m.submit(late)
    end = m.end_session(1381231879510)
    assert OrderExpired("d1", 1381231879510) in end and OrderExpired("d2", 1381231879510) in end
    assert OrderRejected("d3", 1381231879600, "session_closed") in end
    assert m.working_orders() == []


# ------------------------------------------------------------------ depth (no real depth feed)


def test_depth_levels_give_the_queue_ahead_behind_the_best():
    # The shared data sets are top of book only; this book is hand-made. Bid 10.00 x 200 with
    # depth 9.99 x 300, 9.98 x 400: a buy at 9.99 has 300 ahead, at 9.985 (inside the depth, no
    # level) nothing, at 9.97 (beyond the depth) unknown until seen.
    m = PaperMatcher(MatchingConfig(whole_units=False))
    q = Quote(ts_ms=1000, symbol="X", bid=10.00, ask=10.01, bid_size=200.0, ask_size=100.0)
    m.on_quote(q, bid_depth=[(9.99, 300.0), (9.98, 400.0)])
    for coid, px in (("p1", 9.99), ("p2", 9.985), ("p3", 9.97)):
        m.submit(
            new_order(
                client_order_id=coid,
                strategy="s",
                symbol="X",
                side="buy",
                quantity=100,
                decision_ts_ms=1000,
                latency_ms=0,
                limit_price=px,
            )
        )
    m.advance_to(1000)
    assert [m.queue_position(c).ahead for c in ("p1", "p2", "p3")] == [300, 0, None]
    # the depth shrinks at 9.99 by 150 (cancels): pro rata 300 x 150/300
    m.on_quote(q, bid_depth=[(9.99, 150.0), (9.98, 400.0), (9.97, 50.0)])
    assert [m.queue_position(c).ahead for c in ("p1", "p3")] == [150, 50]
    out = m.on_trade(Trade(ts_ms=1001, symbol="X", price=9.99, size=200.0))
    assert fills(out) == [(1001, 9.99, 50.0, "maker")]
    assert m.queue_position("p1").remaining == 50


# ------------------------------------------------------------------ the whole real day


def test_every_fill_of_the_real_day_keeps_the_rules(samples):
    # The whole BAC day (288,048 quotes, 125,872 prints) with an order every 2 s, cycling through
    # a market IOC, a marketable DAY limit, a limit joining the best and one 2 ticks behind it,
    # each DAY order canceled 30 s later. Every taker fill is at the opposite best of a two-sided,
    # uncrossed quote, and what paper orders take from one quote never exceeds its displayed
    # size; every maker fill comes from a print at or through its limit, at its limit, and never
    # exceeds the print; no order fills beyond its quantity. The OMS takes every venue event
    # without an illegal transition and ends with every order closed.
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data
    events = market_events(quotes, trades, "BAC")
    m, oms = PaperMatcher(), OrderManager()
    orders: dict[str, Order] = {}
    filled: dict[str, float] = {}
    cancels: list[tuple[int, str]] = []
    prevailing: Quote | None = None
    next_ms, n, taker, maker, locked_or_crossed_seen = events[0].ts_ms, 0, 0, 0, 0
    for ev in events:
        out = []
        while cancels and cancels[0][0] <= ev.ts_ms:
            at, coid = cancels.pop(0)
            out += m.cancel(coid, at + 5)
        if ev.ts_ms >= next_ms and prevailing is not None and prevailing.bid < prevailing.ask:
            n += 1
            next_ms = ev.ts_ms + 2000
            side, kind = ("buy" if n % 2 else "sell"), n % 4
            best, opposite = (prevailing.bid, prevailing.ask) if side == "buy" else (prevailing.ask, prevailing.bid)
            step = 0.01 if side == "buy" else -0.01
            limit = [None, opposite, best, round(best - 2 * step, 2)][kind]
            o = order(
                f"d{n}", side, 100 * (1 + n % 5), ev.ts_ms, limit=limit, tif="IOC" if kind == 0 else "DAY", latency_ms=5
            )
            orders[o.client_order_id] = o
            oms.submit(o)
            out += m.submit(o)
            if kind:
                cancels.append((ev.ts_ms + 30_000, o.client_order_id))
        before = prevailing
        if isinstance(ev, Quote):
            out += m.on_quote(ev)
            prevailing = ev
            locked_or_crossed_seen += ev.bid >= ev.ask
        else:
            out += m.on_trade(ev)
        for e in out:
            oms.apply(e)
        taken_here = 0.0
        printed = {"buy": 0.0, "sell": 0.0}
        for f in (e for e in out if isinstance(e, Fill)):
            o = orders[f.client_order_id]
            filled[f.client_order_id] = filled.get(f.client_order_id, 0.0) + f.quantity
            assert filled[f.client_order_id] <= o.quantity + 1e-9
            if f.liquidity is Liquidity.TAKER:
                taker += 1
                q = before if f.ts_ms < ev.ts_ms else ev  # at arrival: the quote before this event
                assert isinstance(q, Quote) and q.bid < q.ask, (f, q)
                assert f.price == (q.ask if o.side == "buy" else q.bid), (f, q)
                assert o.limit_price is None or (
                    f.price <= o.limit_price if o.side == "buy" else f.price >= o.limit_price
                )
                if q is ev:
                    taken_here += f.quantity
                    assert taken_here <= (ev.ask_size if o.side == "buy" else ev.bid_size)
                else:
                    assert f.quantity <= (q.ask_size if o.side == "buy" else q.bid_size)
            else:
                maker += 1
                assert isinstance(ev, Trade) and f.ts_ms == ev.ts_ms and f.price == o.limit_price
                assert ev.price <= o.limit_price if o.side == "buy" else ev.price >= o.limit_price
                printed[str(o.side)] += f.quantity
                assert printed[str(o.side)] <= ev.size
    for e in m.end_session(events[-1].ts_ms):
        oms.apply(e)
    assert m.working_orders() == [] and oms.open_orders() == []
    assert all(abs(oms.get(c).filled_quantity - q) < 1e-9 for c, q in filled.items())
    assert n > 10_000 and taker > 3_000 and maker > 1_000 and locked_or_crossed_seen == 9_726
