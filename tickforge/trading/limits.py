"""Risk limits: one validated model, and a YAML file watcher that keeps the last good limits.

Unknown keys are errors (``extra="forbid"``): a limit the code does not read must never be
accepted silently, nor may a misspelt one leave its default in force.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class Bucket(StrEnum):
    LOW = "LOW"
    MED = "MED"
    HIGH = "HIGH"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only orders that reduce a position
    HALTED = "HALTED"  # nothing

    @property
    def severity(self) -> int:
        return {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}[self]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SymbolLimits(_Strict):
    """Per-symbol overrides; a missing field keeps the account-wide limit."""

    max_order_quantity: Positive | None = None
    max_order_notional: Positive | None = None
    max_position: Positive | None = None


class ThrottleLimits(_Strict):
    # NautilusTrader's default submit throttle: 100 orders per second
    per_symbol_orders_per_second: Positive = 100.0
    per_symbol_burst: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 100.0
    total_orders_per_second: Positive = 100.0
    total_burst: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 100.0


class RiskLimits(_Strict):
    capital: Positive
    holdback: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.1
    bucket_shares: dict[Bucket, Share]
    max_order_notional: Positive
    max_order_quantity: Positive
    price_collar_bps: Positive = 100.0  # limit price within this of the last quote's mid
    max_position: Positive  # shares, absolute, per symbol across strategies
    symbols: dict[str, SymbolLimits] = Field(default_factory=dict)
    throttle: ThrottleLimits = Field(default_factory=ThrottleLimits)
    daily_loss_limit: Positive | None = None  # currency; loss since the day's start equity
    max_drawdown: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] | None = None  # of peak equity
    daily_loss_action: TradingState = TradingState.REDUCING
    drawdown_action: TradingState = TradingState.HALTED

    @model_validator(mode="after")
    def _shares_fit(self) -> RiskLimits:
        total = sum(self.bucket_shares.values())
        if total > 1 - self.holdback + 1e-12:
            raise ValueError(
                f"bucket shares sum to {total:g}, more than the {1 - self.holdback:g} left after the holdback"
            )
        for action in (self.daily_loss_action, self.drawdown_action):
            if action is TradingState.ACTIVE:
                raise ValueError("a limit breach must move trading to REDUCING or HALTED")
        return self

    def for_symbol(self, symbol: str) -> tuple[float, float, float]:
        """(max order quantity, max order notional, max position) for ``symbol``."""
        o = self.symbols.get(symbol)
        return (
            (o and o.max_order_quantity) or self.max_order_quantity,
            (o and o.max_order_notional) or self.max_order_notional,
            (o and o.max_position) or self.max_position,
        )

    def bucket_budget(self, bucket: Bucket) -> float:
        return self.capital * self.bucket_shares.get(bucket, 0.0)


class LimitsError(ValueError):
    """A limits file that cannot be used, with the reason."""


def parse_limits(text: str, source: str = "<limits>") -> RiskLimits:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LimitsError(f"{source}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise LimitsError(f"{source}: expected a mapping of limits, got {type(raw).__name__}")
    try:
        return RiskLimits.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in e.errors())
        raise LimitsError(f"{source}: invalid limits: {problems}") from e


@dataclass(frozen=True, slots=True)
class Reload:
    changed: bool  # new limits are in force
    error: str | None = None  # the file changed but was rejected; the previous limits stay


class LimitsFile:
    """The limits in force from a YAML file, re-read when it changes.

    The first load must succeed (no limits, no trading). Later a changed file that does not
    parse or validate is rejected with its reason and the previous limits stay in force; the
    same bad content is reported once, not on every poll.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        text, self._stamp = self._read()
        self._digest = hashlib.sha256(text.encode()).hexdigest()
        self.current = parse_limits(text, str(self.path))
        self.last_error: str | None = None

    def reload_if_changed(self) -> Reload:
        try:
            stamp = self._stat()
        except OSError as e:
            return self._rejected(f"{self.path}: cannot read: {e}")
        if stamp == self._stamp:
            return Reload(False, self.last_error)
        try:
            text, stamp = self._read()
        except LimitsError as e:
            self._stamp = stamp
            return self._rejected(str(e))
        except OSError as e:
            return self._rejected(f"{self.path}: cannot read: {e}")
        self._stamp = stamp
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._digest:
            return Reload(False, self.last_error)
        self._digest = digest
        try:
            limits = parse_limits(text, str(self.path))
        except LimitsError as e:
            return self._rejected(str(e))
        self.current = limits
        self.last_error = None
        log.info("risk limits reloaded", extra={"path": str(self.path)})
        return Reload(True)

    def _rejected(self, error: str) -> Reload:
        if error != self.last_error:
            log.error("risk limits rejected, previous limits stay", extra={"path": str(self.path), "error": error})
        self.last_error = error
        return Reload(False, error)

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size)

    def _read(self) -> tuple[str, tuple[int, int]]:
        stamp = self._stat()
        try:
            return self.path.read_text(encoding="utf-8"), stamp
        except UnicodeDecodeError as e:
            raise LimitsError(f"{self.path}: not UTF-8 text: {e}") from e
