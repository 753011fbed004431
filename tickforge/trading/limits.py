"""Risk limits: one validated model, parsed from YAML text (the file that holds them is read and
watched at the room's edge: :class:`tickforge.trading.io.LimitsFile`).

Unknown keys are errors (``extra="forbid"``): a limit the code does not read must never be
accepted silently, nor may a misspelt one leave its default in force.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    # Order sizes are whole lots: per symbol, else per symbol class, else 1 (a share, a unit).
    # Crypto trades in fractions: a whole bitcoin is more than a pick's budget.
    lot_sizes: dict[str, Positive] = Field(default_factory=lambda: {"crypto": 0.00001})

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

    def lot_size(self, symbol: str, symbol_class: str | None) -> float:
        """The lot of ``symbol``: its own, its class's, else 1."""
        own = self.lot_sizes.get(symbol)
        if own is None and symbol_class is not None:
            own = self.lot_sizes.get(symbol_class)
        return 1.0 if own is None else own

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
