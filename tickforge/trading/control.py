"""Trading-state commands set by hand: halt, reduce, resume, with who and why.

A command is one JSON message on the compacted ``trading.control`` topic, keyed by its scope (the
account it applies to; ``all`` for every account): compaction keeps each scope's latest command,
so a risk instance that reads the topic from the start ends at the state in force. The
automatic moves (daily loss, drawdown; :class:`~tickforge.trading.risk.RiskEngine`) only
tighten; ``resume`` is only by hand, and a resume while a limit is still breached is tightened
again at the next mark (raise the limit in the limits file to trade on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec

from tickforge.trading.limits import TradingState

ALL_ACCOUNTS: Final = "all"
MAX_TEXT: Final = 500  # reason and operator are for people: bounded, never a payload


class ControlAction(StrEnum):
    HALT = "halt"
    REDUCE = "reduce"
    RESUME = "resume"

    @property
    def state(self) -> TradingState:
        return {
            ControlAction.HALT: TradingState.HALTED,
            ControlAction.REDUCE: TradingState.REDUCING,
            ControlAction.RESUME: TradingState.ACTIVE,
        }[self]


class ControlError(ValueError):
    """A control message that cannot be applied, with the reason."""


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ControlError(f"{what} must be a non-empty text")
    if len(value) > MAX_TEXT:
        raise ControlError(f"{what} longer than {MAX_TEXT} characters")
    return value.strip()


@dataclass(frozen=True, slots=True)
class ControlCommand:
    action: ControlAction
    reason: str
    operator: str
    ts_ms: int  # wall time at which it was issued
    scope: str = ALL_ACCOUNTS

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "action", ControlAction(self.action))
        except ValueError:
            raise ControlError(f"action must be one of {[a.value for a in ControlAction]}: {self.action!r}") from None
        object.__setattr__(self, "reason", _text(self.reason, "reason"))
        object.__setattr__(self, "operator", _text(self.operator, "operator"))
        object.__setattr__(self, "scope", _text(self.scope, "scope"))
        if not isinstance(self.ts_ms, int) or isinstance(self.ts_ms, bool) or self.ts_ms < 0:
            raise ControlError(f"ts_ms must be an int >= 0: {self.ts_ms!r}")

    @property
    def state(self) -> TradingState:
        return self.action.state

    def applies_to(self, account: str) -> bool:
        return self.scope in (ALL_ACCOUNTS, account)

    def describe(self) -> str:
        return f"{self.action} by {self.operator}: {self.reason}"


def encode_control(command: ControlCommand) -> bytes:
    return msgspec.json.encode(
        {
            "action": str(command.action),
            "reason": command.reason,
            "operator": command.operator,
            "ts_ms": command.ts_ms,
            "scope": command.scope,
        }
    )


def decode_control(payload: bytes | None) -> ControlCommand:
    """A command from its message value; :class:`ControlError` says what is wrong with it."""
    if not payload:
        raise ControlError("empty control message")
    try:
        raw = msgspec.json.decode(payload)
    except msgspec.DecodeError as e:
        raise ControlError(f"control message is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ControlError("control message must be a JSON object")
    unknown = set(raw) - {"action", "reason", "operator", "ts_ms", "scope"}
    if unknown:
        raise ControlError(f"unknown fields in control message: {sorted(unknown)}")
    missing = {"action", "reason", "operator", "ts_ms"} - set(raw)
    if missing:
        raise ControlError(f"control message lacks {sorted(missing)}")
    ts = raw["ts_ms"]
    if isinstance(ts, float) and math.isfinite(ts) and ts.is_integer():
        ts = int(ts)
    return ControlCommand(raw["action"], raw["reason"], raw["operator"], ts, raw.get("scope", ALL_ACCOUNTS))


class ControlState:
    """The latest command per scope, from control messages in topic order; the state in force
    for an account is its own scope's latest command if later than ``all``'s, else ``all``'s."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple[int, ControlCommand]] = {}
        self._seen = 0

    def apply(self, command: ControlCommand) -> None:
        self._seen += 1
        self._latest[command.scope] = (self._seen, command)

    def in_force(self, account: str) -> ControlCommand | None:
        found = [entry for scope, entry in self._latest.items() if scope in (ALL_ACCOUNTS, account)]
        return max(found, key=lambda e: e[0])[1] if found else None
