"""Orders refuse impossible values; the OMS state machine, its audit trail and idempotency."""

from __future__ import annotations

import math

import pytest

from tickforge.trading.events import CancelReason, CancelRejected, CancelRejectReason, OrderAccepted, OrderCanceled
from tickforge.trading.oms import (
    LEGAL_TRANSITIONS,
    Applied,
    ConflictingDuplicate,
    IllegalTransition,
    OmsError,
    OrderManager,
    OrderStatus,
    UnknownOrder,
)
from tickforge.trading.orders import (
    Fill,
    Liquidity,
    Order,
    OrderType,
    Side,
    TimeInForce,
    client_order_id,
    fill_id,
    new_order,
    params_hash,
)

# 09:45 ET on the demo day; the prices are BAC's of that morning
T0 = 1381239900000


def buy(coid: str = "o1", qty: float = 300, limit: float | None = 13.84) -> Order:
    return new_order(
        client_order_id=coid,
        strategy="sma",
        symbol="BAC",
        side="buy",
        quantity=qty,
        decision_ts_ms=T0,
        latency_ms=5,
        limit_price=limit,
    )


def fill(coid: str, n: int, qty: float, price: float = 13.84, side: Side = Side.BUY) -> Fill:
    return Fill(fill_id(coid, n), coid, "BAC", side, T0 + 10 * n, price, qty, Liquidity.MAKER)


# ------------------------------------------------------------------ orders


def test_client_order_id_is_deterministic_from_its_cause():
    a = client_order_id("sma", "BAC", {"fast": 5, "slow": 20}, "1m", T0)
    assert a == client_order_id("sma", "BAC", {"slow": 20, "fast": 5}, "1m", T0)
    others = {
        client_order_id("sma", "BAC", {"fast": 5, "slow": 21}, "1m", T0),
        client_order_id("sma", "BAC", {"fast": 5, "slow": 20}, "1m", T0 + 60_000),
        client_order_id("sma", "BAC", {"fast": 5, "slow": 20}, "5m", T0),
        client_order_id("sma", "SPY", {"fast": 5, "slow": 20}, "1m", T0),
        client_order_id("sma", "BAC", {"fast": 5, "slow": 20}, "1m", T0, leg=1),
    }
    assert a not in others and len(others) == 5
    assert len(a) <= 128 and a.startswith("sma-BAC-1m-")
    assert params_hash({"b": 1.5, "a": [1, 2]}) == params_hash({"a": [1, 2], "b": 1.5})
    with pytest.raises(ValueError, match="finite"):
        params_hash({"x": math.nan})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": -100}, "quantity"),
        ({"quantity": math.inf}, "quantity"),
        ({"limit_price": None}, "limit_price"),
        ({"limit_price": -1.0}, "limit_price"),
        ({"order_type": OrderType.MARKET}, "market order has no limit_price"),
        ({"arrival_ts_ms": T0 - 1}, "before decision"),
        ({"decision_ts_ms": True, "arrival_ts_ms": True}, "decision_ts_ms"),
        ({"symbol": ""}, "symbol"),
        ({"client_order_id": " x"}, "client_order_id"),
        ({"client_order_id": "x" * 129}, "too long"),
        ({"side": "long"}, "long"),
    ],
)
def test_order_refuses_impossible_values(changes, message):
    fields = dict(
        client_order_id="o1",
        strategy="sma",
        symbol="BAC",
        side=Side.BUY,
        quantity=100,
        order_type=OrderType.LIMIT,
        limit_price=13.84,
        time_in_force=TimeInForce.DAY,
        decision_ts_ms=T0,
        arrival_ts_ms=T0 + 5,
    )
    fields.update(changes)
    with pytest.raises(ValueError, match=message):
        Order(**fields)


def test_fill_refuses_impossible_values():
    with pytest.raises(ValueError, match="price"):
        Fill("f", "o1", "BAC", Side.BUY, T0, 0.0, 100, Liquidity.TAKER)
    with pytest.raises(ValueError, match="quantity"):
        Fill("f", "o1", "BAC", Side.BUY, T0, 13.84, math.nan, Liquidity.TAKER)
    with pytest.raises(ValueError):
        Fill("f", "o1", "BAC", "short", T0, 13.84, 100, Liquidity.TAKER)
    assert Fill("f", "o1", "BAC", "sell", T0, 13.84, 100, "maker").side is Side.SELL


# ------------------------------------------------------------------ state machine


def test_life_of_an_order_and_its_audit_trail():
    oms = OrderManager()
    assert oms.submit(buy()) is Applied.APPLIED
    assert oms.accept("o1", T0 + 5) is Applied.APPLIED
    assert oms.apply_fill(fill("o1", 1, 100)) is Applied.APPLIED
    assert oms.get("o1").status is OrderStatus.PARTIALLY_FILLED
    assert oms.apply_fill(fill("o1", 2, 100, price=13.83)) is Applied.APPLIED
    assert oms.apply_fill(fill("o1", 3, 100)) is Applied.APPLIED
    record = oms.get("o1")
    assert record.status is OrderStatus.FILLED and record.remaining_quantity == 0
    assert record.average_fill_price == pytest.approx((13.84 * 2 + 13.83) / 3)
    assert [(t.from_status, t.to_status, t.reason) for t in oms.audit_trail()] == [
        (None, OrderStatus.NEW, "submitted"),
        (OrderStatus.NEW, OrderStatus.ACCEPTED, "accepted"),
        (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, fill_id("o1", 1)),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED, fill_id("o1", 2)),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, fill_id("o1", 3)),
    ]
    assert [t.seq for t in record.transitions] == [0, 1, 2, 3, 4]


def test_terminal_states_have_no_way_out():
    for status in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
        assert status.is_terminal and LEGAL_TRANSITIONS[status] == frozenset()


@pytest.mark.parametrize(
    "steps, illegal",
    [
        ([], lambda oms: oms.apply_fill(fill("o1", 1, 100))),  # a fill before the venue accepted
        ([], lambda oms: oms.expire("o1", T0)),
        (["accept"], lambda oms: oms.reject("o1", T0, "late")),
        (["reject"], lambda oms: oms.accept("o1", T0)),
        (["accept", "cancel"], lambda oms: oms.apply_fill(fill("o1", 1, 100))),
        (["accept", "fill"], lambda oms: oms.cancel("o1", T0, "requested")),
    ],
)
def test_illegal_transitions_are_refused_and_change_nothing(steps, illegal):
    oms = OrderManager()
    oms.submit(buy())
    for step in steps:
        {
            "accept": lambda: oms.accept("o1", T0),
            "reject": lambda: oms.reject("o1", T0, "max_notional"),
            "cancel": lambda: oms.cancel("o1", T0, "requested"),
            "fill": lambda: oms.apply_fill(fill("o1", 1, 300)),
        }[step]()
    before = (oms.get("o1").status, len(oms.audit_trail()), oms.get("o1").filled_quantity)
    with pytest.raises(IllegalTransition) as caught:
        illegal(oms)
    assert caught.value.client_order_id == "o1" and caught.value.current is before[0]
    assert (oms.get("o1").status, len(oms.audit_trail()), oms.get("o1").filled_quantity) == before


def test_repeats_are_recognised_not_applied():
    oms = OrderManager()
    oms.submit(buy())
    assert oms.submit(buy()) is Applied.DUPLICATE
    with pytest.raises(ConflictingDuplicate):
        oms.submit(buy(qty=400))
    oms.accept("o1", T0 + 5)
    assert oms.accept("o1", T0 + 5) is Applied.DUPLICATE
    oms.apply_fill(fill("o1", 1, 100))
    assert oms.apply_fill(fill("o1", 1, 100)) is Applied.DUPLICATE
    assert oms.accept("o1", T0 + 5) is Applied.DUPLICATE  # a re-delivered accept after a fill
    assert oms.get("o1").filled_quantity == 100 and len(oms.fills) == 1
    oms.cancel("o1", T0 + 50, "requested")
    assert oms.cancel("o1", T0 + 50, "requested") is Applied.DUPLICATE
    assert len(oms.audit_trail()) == 4


def test_overfills_mismatches_and_unknown_orders_are_refused():
    oms = OrderManager()
    oms.submit(buy())
    oms.accept("o1", T0)
    with pytest.raises(OmsError, match="overfills"):
        oms.apply_fill(fill("o1", 1, 301))
    with pytest.raises(OmsError, match="does not match"):
        oms.apply_fill(fill("o1", 1, 100, side=Side.SELL))
    with pytest.raises(UnknownOrder):
        oms.apply_fill(fill("zz", 1, 100))
    assert oms.get("o1").status is OrderStatus.ACCEPTED and oms.fills == []


def test_venue_events_drive_the_oms():
    oms = OrderManager()
    oms.submit(buy())
    events = [
        OrderAccepted("o1", T0 + 5),
        fill("o1", 1, 120),
        OrderCanceled("o1", T0 + 40, CancelReason.REQUESTED),
        CancelRejected("o1", T0 + 41, CancelRejectReason.ALREADY_CLOSED),
    ]
    assert [oms.apply(e) for e in events] == [Applied.APPLIED, Applied.APPLIED, Applied.APPLIED, None]
    record = oms.get("o1")
    assert record.status is OrderStatus.CANCELED and record.filled_quantity == 120
    assert record.transitions[-1].reason == "requested"
    assert oms.open_orders() == []
