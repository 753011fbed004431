"""Trading-state commands: their message form, what is refused, which one is in force, and how
they move the risk engine's state machine next to the automatic moves."""

from __future__ import annotations

import pytest

from tests.unit.test_trading_risk import ASK, LIMITS_YAML, T0, Clock, filled, order
from tickforge.trading.control import (
    ControlAction,
    ControlCommand,
    ControlError,
    ControlState,
    decode_control,
    encode_control,
)
from tickforge.trading.limits import Bucket, TradingState, parse_limits
from tickforge.trading.risk import RiskEngine, RiskRule


def test_a_command_round_trips_through_its_message():
    command = ControlCommand("halt", "  exchange outage ", "alice", T0, "paper")
    assert (
        command.action is ControlAction.HALT
        and command.state is TradingState.HALTED
        and command.reason == "exchange outage"
    )
    assert decode_control(encode_control(command)) == command
    assert decode_control(b'{"action": "resume", "reason": "ok", "operator": "bob", "ts_ms": 5.0}').scope == "all"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"action": "pause", "reason": "x", "operator": "a", "ts_ms": 1}', "action must be one of"),
        (b'{"action": "halt", "reason": " ", "operator": "a", "ts_ms": 1}', "reason must be"),
        (b'{"action": "halt", "reason": "x", "ts_ms": 1}', "lacks"),
        (b'{"action": "halt", "reason": "x", "operator": "a", "ts_ms": -1}', "ts_ms"),
        (b'{"action": "halt", "reason": "x", "operator": "a", "ts_ms": 1, "state": "HALTED"}', "unknown fields"),
        (b'{"action": "halt", "reason": "' + b"x" * 501 + b'", "operator": "a", "ts_ms": 1}', "longer than"),
    ],
)
def test_bad_control_messages_are_refused_with_their_reason(payload, message):
    with pytest.raises(ControlError, match=message):
        decode_control(payload)


def test_the_latest_command_of_the_account_or_of_all_is_in_force():
    state = ControlState()
    assert state.in_force("paper") is None
    state.apply(ControlCommand("halt", "all stop", "ops", 1))
    state.apply(ControlCommand("reduce", "paper only", "ops", 2, "paper"))
    assert state.in_force("paper").action is ControlAction.REDUCE
    assert state.in_force("live").action is ControlAction.HALT
    state.apply(ControlCommand("resume", "all clear", "ops", 3))
    assert state.in_force("paper").action is ControlAction.RESUME  # the later 'all' command wins
    # topic order decides, not the stamps (a clock that steps back changes nothing)
    state.apply(ControlCommand("halt", "late stamp", "ops", 0, "paper"))
    assert state.in_force("paper").action is ControlAction.HALT


def test_commands_move_the_state_machine_and_the_limits_tighten_again():
    clock = Clock()
    engine = RiskEngine(parse_limits(LIMITS_YAML), clock)
    engine.on_quote("BAC", 13.88, ASK)
    assert engine.apply_control(ControlCommand("halt", "test", "alice", T0)) is True
    assert engine.apply_control(ControlCommand("halt", "again", "alice", T0)) is False
    assert engine.check(order(), Bucket.LOW).rule is RiskRule.TRADING_HALTED
    assert engine.state_changes[-1].reason == "halt by alice: test"
    engine.apply_control(ControlCommand("reduce", "wind down", "alice", T0))
    assert engine.check(order(), Bucket.LOW).rule is RiskRule.TRADING_REDUCING
    engine.apply_control(ControlCommand("resume", "done", "alice", T0))
    long = order(qty=1000)
    assert engine.check(long, Bucket.LOW).approved
    engine.on_fill(filled(long))
    clock.now += 60_000
    engine.on_trade("BAC", 13.38)  # a daily loss of 510 over the 500 limit: REDUCING by itself
    assert engine.state is TradingState.REDUCING
    engine.apply_control(ControlCommand("resume", "looked at it", "bob", T0))
    assert engine.state is TradingState.ACTIVE
    engine.on_trade("BAC", 13.37)  # still over the limit at the next mark: tightened again
    assert engine.state is TradingState.REDUCING
    assert [c.to_state for c in engine.state_changes] == [
        TradingState.HALTED,
        TradingState.REDUCING,
        TradingState.ACTIVE,
        TradingState.REDUCING,
        TradingState.ACTIVE,
        TradingState.REDUCING,
    ]
