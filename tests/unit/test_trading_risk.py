"""Risk rules, throttles (injected clock), trading state, budgets and the limits file.

Prices are BAC's NBBO at 10:00:00.001 ET on 2013-10-08 (quote row 23187: 13.88 x 42,800 /
13.89 x 204,500) and SPY's first regular print of that day's morning.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tickforge.platform.settings import SignalSettings
from tickforge.trading.io import LimitsFile
from tickforge.trading.limits import Bucket, LimitsError, RiskLimits, TradingState, parse_limits
from tickforge.trading.orders import Fill, Liquidity, Order, fill_id, new_order
from tickforge.trading.picks import Pick
from tickforge.trading.risk import RiskEngine, RiskRule, pick_sizer, target_quantity
from tickforge.trading.throttle import TokenBucket

T0 = 1381240800001
BID, ASK = 13.88, 13.89

LIMITS_YAML = """\
capital: 100000
holdback: 0.1
bucket_shares: {LOW: 0.5, MED: 0.3, HIGH: 0.1}
max_order_notional: 20000
max_order_quantity: 2000
price_collar_bps: 50
max_position: 3000
symbols:
  SPY: {max_order_quantity: 50}
throttle:
  per_symbol_orders_per_second: 2
  per_symbol_burst: 2
  total_orders_per_second: 3
  total_burst: 3
daily_loss_limit: 500
max_drawdown: 0.02
"""


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def engine(clock) -> RiskEngine:
    e = RiskEngine(parse_limits(LIMITS_YAML), clock)
    e.on_quote("BAC", BID, ASK)
    e.on_quote("SPY", 167.42, 167.43)
    return e


_n = 0


def order(
    side: str = "buy", qty: float = 100, limit: float | None = ASK, symbol: str = "BAC", strategy: str = "sma"
) -> Order:
    global _n
    _n += 1
    return new_order(
        client_order_id=f"o{_n}",
        strategy=strategy,
        symbol=symbol,
        side=side,
        quantity=qty,
        decision_ts_ms=T0,
        latency_ms=5,
        limit_price=limit,
    )


def filled(o: Order, qty: float | None = None, price: float | None = None, n: int = 1) -> Fill:
    return Fill(
        fill_id(o.client_order_id, n),
        o.client_order_id,
        o.symbol,
        o.side,
        T0,
        price or o.limit_price or ASK,
        qty or o.quantity,
        Liquidity.TAKER,
    )


def test_an_ordinary_order_is_approved(engine):
    d = engine.check(order(), Bucket.LOW)
    assert d.approved and d.rule is None and d.detail == "approved"


@pytest.mark.parametrize(
    "make, rule",
    [
        (lambda: order(qty=2001), RiskRule.MAX_QUANTITY),
        (lambda: order(symbol="SPY", qty=51, limit=167.43), RiskRule.MAX_QUANTITY),  # per-symbol override
        (lambda: order(symbol="AIG", limit=48.0), RiskRule.NO_REFERENCE_PRICE),
        (lambda: order(limit=13.96), RiskRule.PRICE_COLLAR),  # 54 bps above the 13.885 mid
        (lambda: order(side="sell", limit=13.80), RiskRule.PRICE_COLLAR),
        (lambda: order(qty=1500, limit=None), RiskRule.MAX_NOTIONAL),  # 1500 x 13.89 = 20,835
    ],
)
def test_every_rejection_names_its_rule(engine, make, rule):
    d = engine.check(make(), Bucket.LOW)
    assert not d.approved and d.rule is rule and d.detail
    assert engine.rejections[rule] == 1


def test_collar_edge_is_inclusive(engine):
    # 13.885 x (1 + 50 bps) = 13.9544: 13.95 passes, 13.96 does not
    assert engine.check(order(limit=13.95), Bucket.LOW).approved


def spaced(engine: RiskEngine, clock: Clock):
    """``engine.check`` one second apart, clear of the throttles."""

    def check(o: Order, bucket: Bucket):
        clock.now += 1000
        return engine.check(o, bucket)

    return check


def test_max_position_counts_the_position_and_open_orders(engine, clock):
    check = spaced(engine, clock)
    first = order(qty=1400)
    assert check(first, Bucket.LOW).approved
    engine.on_fill(filled(first))
    assert check(order(qty=1400), Bucket.LOW).approved  # 1400 held + 1400 open
    d = check(order(qty=300), Bucket.LOW)
    assert d.rule is RiskRule.MAX_POSITION and "3100" in d.detail
    assert check(order(side="sell", qty=1400, limit=BID), Bucket.LOW).approved  # reduces


def test_bucket_budget_is_spent_by_orders_and_released_on_fills_and_cancels(engine, clock):
    check = spaced(engine, clock)
    # HIGH: 10 % of 100,000 = 10,000. 700 x 13.89 = 9,723 reserved; 100 more would be 11,112.
    a = order(qty=700)
    assert check(a, Bucket.HIGH).approved
    assert engine.budget_used(Bucket.HIGH) == pytest.approx(9723)
    assert check(order(qty=100), Bucket.HIGH).rule is RiskRule.BUCKET_BUDGET
    engine.on_order_closed(a.client_order_id)  # canceled: released
    assert engine.budget_used(Bucket.HIGH) == 0
    b = order(qty=700)
    assert check(b, Bucket.HIGH).approved
    engine.on_fill(filled(b, qty=300, price=13.89))
    assert engine.budget_used(Bucket.HIGH) == pytest.approx(700 * 13.89)  # 300 held + 400 reserved
    engine.on_order_closed(b.client_order_id)  # the rest canceled
    assert engine.budget_used(Bucket.HIGH) == pytest.approx(300 * 13.89)
    sell = order(side="sell", qty=300, limit=BID)
    assert check(sell, Bucket.HIGH).approved
    engine.on_fill(filled(sell, price=BID))  # flat again: the budget is free
    assert engine.budget_used(Bucket.HIGH) == 0
    assert engine.budget_left(Bucket.HIGH) == pytest.approx(10_000)


def test_throttles_per_symbol_and_total_with_an_injected_clock(engine, clock):
    assert [engine.check(order(), Bucket.LOW).approved for _ in range(2)] == [True, True]
    assert engine.check(order(), Bucket.LOW).rule is RiskRule.THROTTLE_SYMBOL
    assert engine.check(order(symbol="SPY", qty=10, limit=167.43), Bucket.LOW).approved
    assert engine.check(order(symbol="SPY", qty=10, limit=167.43), Bucket.LOW).rule is RiskRule.THROTTLE_TOTAL
    clock.now += 500  # half a second: one BAC token (2/s), 1.5 total tokens
    assert engine.check(order(), Bucket.LOW).approved
    assert engine.check(order(symbol="SPY", qty=10, limit=167.43), Bucket.LOW).rule is RiskRule.THROTTLE_TOTAL


def test_rejected_orders_spend_no_throttle_token(engine):
    for _ in range(5):
        assert engine.check(order(qty=5000), Bucket.LOW).rule is RiskRule.MAX_QUANTITY
    assert engine.check(order(), Bucket.LOW).approved


def test_token_bucket_refills_at_its_rate_up_to_its_burst():
    bucket = TokenBucket(100, 10, now_ms=0)
    assert sum(bucket.try_take(0) for _ in range(15)) == 10
    assert bucket.available(50) == pytest.approx(5)
    assert bucket.available(10_000) == 10
    assert bucket.available(5_000) == 10  # a clock stepping back refills nothing
    with pytest.raises(ValueError):
        TokenBucket(0, 10)


def test_a_repeated_check_returns_the_first_decision(engine):
    o = order()
    first = engine.check(o, Bucket.LOW)
    again = engine.check(o, Bucket.LOW)
    assert again.repeat and (again.approved, again.rule) == (first.approved, first.rule)
    assert engine.budget_used(Bucket.LOW) == pytest.approx(100 * ASK)  # reserved once


def test_states_by_hand_and_by_loss_limits(engine, clock):
    engine.set_state(TradingState.HALTED, "by hand")
    assert engine.check(order(), Bucket.LOW).rule is RiskRule.TRADING_HALTED
    engine.set_state(TradingState.ACTIVE, "resume")
    check = spaced(engine, clock)
    long = order(qty=1000, limit=13.89)
    assert check(long, Bucket.LOW).approved
    engine.on_fill(filled(long))
    clock.now += 60_000
    engine.on_trade("BAC", 13.50)  # 1000 x -0.39 = -390: inside the 500 daily loss limit
    assert engine.state is TradingState.ACTIVE
    engine.on_trade("BAC", 13.38)  # -510
    assert engine.state is TradingState.REDUCING
    assert engine.state_changes[-1].reason.startswith("daily loss 510")
    engine.on_quote("BAC", 13.38, 13.39)
    assert engine.check(order(qty=100, limit=13.39), Bucket.LOW).rule is RiskRule.TRADING_REDUCING
    assert engine.check(order(side="sell", qty=1000, limit=13.38), Bucket.LOW).approved
    assert (
        engine.check(order(side="sell", qty=1, limit=13.38), Bucket.LOW).rule is RiskRule.TRADING_REDUCING
    )  # would flip
    engine.on_trade("BAC", 11.80)  # -2,090: drawdown 2.09 % of the 100,000 peak
    assert engine.state is TradingState.HALTED
    engine.on_trade("BAC", 13.89)  # recovering never resumes by itself
    assert engine.state is TradingState.HALTED
    assert [c.to_state for c in engine.state_changes] == [
        TradingState.HALTED,
        TradingState.ACTIVE,
        TradingState.REDUCING,
        TradingState.HALTED,
    ]


def test_duplicate_fills_are_booked_once(engine):
    o = order()
    engine.check(o, Bucket.LOW)
    assert engine.on_fill(filled(o)) is True
    assert engine.on_fill(filled(o)) is False
    assert engine.ledger.net_quantity("BAC") == 100


def test_sizing_from_pick_weight_and_bucket():
    limits = parse_limits(LIMITS_YAML)
    # MED: 30,000; weight 0.25 -> 7,500 at 13.89 -> 539.96 shares -> 500 in lots of 100
    assert target_quantity(limits, Bucket.MED, 0.25, 13.89, lot_size=100) == 500
    assert target_quantity(limits, Bucket.MED, 0.25, 13.89) == 539
    with pytest.raises(ValueError):
        target_quantity(limits, Bucket.MED, 1.5, 13.89)


def test_sizing_in_the_lots_of_the_symbol_or_its_class():
    """7,500 of bitcoin at 61,828 is 0.12130 in lots of 0.00001 (the crypto class's), not 0 coins;
    a symbol's own lot beats its class's; an equity trades whole shares."""
    limits = parse_limits(LIMITS_YAML)
    size = pick_sizer(limits, SignalSettings().classes())
    btc, bac = (Pick(s, "ema_cross", "1m", {"fast": 2, "slow": 3}, Bucket.MED, 0.25) for s in ("BTCUSDT-SPOT", "BAC"))
    assert size(btc, 61828.0) == 0.1213 and size(bac, 13.89) == 539
    assert target_quantity(limits, Bucket.MED, 0.25, 61828.0) == 0
    own = limits.model_copy(update={"lot_sizes": {"crypto": 0.00001, "BTCUSDT-SPOT": 0.01}})
    assert pick_sizer(own, SignalSettings().classes())(btc, 61828.0) == 0.12


# ------------------------------------------------------------------ the limits model and file


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("max_position: 3000", "max_positon: 3000"), "max_positon: Extra inputs are not permitted"),
        (lambda t: t.replace("HIGH: 0.1", "HIGH: 0.3"), "bucket shares sum to 1.1"),
        (lambda t: t.replace("capital: 100000", "capital: -5"), "capital: Input should be greater than 0"),
        (lambda t: t.replace("LOW:", "LOWEST:"), "bucket_shares.LOWEST"),
        (lambda t: t + "daily_loss_action: ACTIVE\n", "REDUCING or HALTED"),
        (lambda t: t.replace("capital: 100000", "capital: [1"), "not valid YAML"),
        (lambda t: "- just a list\n", "expected a mapping"),
    ],
)
def test_bad_limits_are_rejected_with_a_clear_error(edit, message):
    with pytest.raises(LimitsError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_limits(edit(LIMITS_YAML), "limits.yaml")


def test_defaults_follow_nautilus_submit_throttle():
    limits = RiskLimits(
        capital=1e5, bucket_shares={"LOW": 0.5}, max_order_notional=1e4, max_order_quantity=1e3, max_position=1e3
    )
    assert limits.throttle.total_orders_per_second == 100 and limits.throttle.per_symbol_orders_per_second == 100


def _rewrite(path: Path, text: str, bump_ns: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_ns))  # a distinct mtime even within one tick


def test_limits_file_reloads_on_change_and_keeps_the_last_good_limits(tmp_path):
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS_YAML)
    watched = LimitsFile(path)
    assert watched.reload_if_changed().changed is False
    _rewrite(path, LIMITS_YAML.replace("max_order_quantity: 2000", "max_order_quantity: 1000"), 1_000_000)
    assert watched.reload_if_changed().changed is True
    assert watched.current.max_order_quantity == 1000
    _rewrite(path, LIMITS_YAML.replace("holdback: 0.1", "holdback: 1.5"), 2_000_000)
    outcome = watched.reload_if_changed()
    assert outcome.changed is False and "holdback" in outcome.error
    assert watched.current.max_order_quantity == 1000 and watched.current.holdback == 0.1
    assert watched.reload_if_changed().error == outcome.error  # still the bad file, still said
    path.unlink()
    assert "cannot read" in watched.reload_if_changed().error
    assert watched.current.max_order_quantity == 1000
    _rewrite(path, LIMITS_YAML, 3_000_000)
    assert watched.reload_if_changed().changed is True and watched.last_error is None


def test_a_bad_limits_file_at_start_is_an_error(tmp_path):
    path = tmp_path / "limits.yaml"
    path.write_text("capital: 1\n")
    with pytest.raises(LimitsError, match="bucket_shares: Field required"):
        LimitsFile(path)
    with pytest.raises(OSError):
        LimitsFile(tmp_path / "missing.yaml")


def test_reloaded_limits_apply_to_the_next_check(engine):
    engine.update_limits(parse_limits(LIMITS_YAML.replace("max_order_quantity: 2000", "max_order_quantity: 50")))
    assert engine.check(order(qty=100), Bucket.LOW).rule is RiskRule.MAX_QUANTITY
