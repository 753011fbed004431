"""The strategy registry: each strategy's grid per timeframe, constraints, costs, universe and scoring.

Validated with pydantic (unknown keys refused); every grid is expanded at load so a misspelt
strategy or parameter is one :class:`RegistryError` naming its key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.research.engine import Costs
from tickforge.research.grid import expand_grid
from tickforge.research.strategies import STRATEGIES, get_strategy
from tickforge.research.walkforward import parse_span


class RegistryError(ValueError):
    """A registry that does not validate; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CostsConfig(_Strict):
    fee_bps: float = Field(1.0, ge=0, lt=10_000)
    slippage_bps: float = Field(2.0, ge=0, lt=10_000)
    initial_cash: float = Field(100_000.0, gt=0)

    def costs(self) -> Costs:
        return Costs(self.fee_bps, self.slippage_bps, self.initial_cash)


class Universe(_Strict):
    symbols: list[str] = Field(default_factory=list)  # empty: every symbol of the bars
    timeframes: list[str] = Field(default_factory=lambda: ["1d"])

    @field_validator("timeframes")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            timeframe_ms(name)
        return value


class WalkForward(_Strict):
    train: str = "3y"
    test: str = "1y"

    @field_validator("train", "test")
    @classmethod
    def _span(cls, value: str) -> str:
        parse_span(value)
        return value


class Weights(_Strict):
    """Weights of the robust z-scores; drawdown and turnover are subtracted."""

    total_return: float = 2.5
    sharpe: float = 1.2
    sortino: float = 0.8
    win_rate: float = 0.6
    stability: float = 0.6
    max_drawdown: float = 0.7
    turnover: float = 0.1
    negative_return: float = 2.0  # flat penalty when total_return < 0


class Gates(_Strict):
    min_trades: int = Field(3, ge=0)
    min_sharpe: float = 0.0
    max_drawdown: float = Field(0.5, gt=0, le=1)
    positive_return: bool = True
    min_dsr: float = Field(0.5, ge=0, le=1)


class Buckets(_Strict):
    """Risk buckets by in-sample max drawdown: LOW <= low, MED <= med, else HIGH."""

    low: float = Field(0.15, gt=0, le=1)
    med: float = Field(0.30, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Buckets:
        if self.low > self.med:
            raise ValueError(f"buckets.low ({self.low}) must not exceed buckets.med ({self.med})")
        return self


class Scoring(_Strict):
    weights: Weights = Field(default_factory=Weights)
    winsor: float = Field(0.02, ge=0, lt=0.5)
    z_cap: float = Field(3.0, gt=0)  # each metric's robust z-score within +-z_cap
    gates: Gates = Field(default_factory=Gates)
    buckets: Buckets = Field(default_factory=Buckets)
    top_n_per_symbol: int = Field(1, ge=1)
    top_n_per_bucket: int = Field(5, ge=1)
    max_picks: int = Field(10, ge=1)


class StrategyEntry(_Strict):
    grid: dict[str, dict[str, Any]]  # timeframe -> parameter -> value, range or list
    constraints: list[str] = Field(default_factory=list)
    fixed: dict[str, Any] = Field(default_factory=dict)


class Registry(_Strict):
    universe: Universe = Field(default_factory=Universe)
    costs: CostsConfig = Field(default_factory=CostsConfig)
    walk_forward: WalkForward = Field(default_factory=WalkForward)
    scoring: Scoring = Field(default_factory=Scoring)
    strategies: dict[str, StrategyEntry]

    def grid(self, strategy: str, timeframe: str) -> list[dict[str, Any]]:
        """The expanded, constrained grid of one strategy on one timeframe (empty if it has none)."""
        entry = self.strategies[strategy]
        axes = entry.grid.get(timeframe)
        if axes is None:
            return []
        return expand_grid(get_strategy(strategy), axes, entry.constraints, entry.fixed)


def parse_registry(document: Any, source: str = "registry") -> Registry:
    """A validated :class:`Registry` from a parsed YAML document."""
    if not isinstance(document, Mapping):
        raise RegistryError(f"{source}: expected a mapping at the top level, got {type(document).__name__}")
    try:
        registry = Registry.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise RegistryError(f"{source}: {where}: {first['msg']}{more}") from None
    except ValueError as exc:
        raise RegistryError(f"{source}: {exc}") from None
    for name, entry in registry.strategies.items():
        if name not in STRATEGIES:
            raise RegistryError(f"{source}: strategies.{name}: unknown strategy (known: {', '.join(STRATEGIES)})")
        for timeframe in entry.grid:
            try:
                timeframe_ms(timeframe)
                if not registry.grid(name, timeframe):
                    raise ValueError("the grid is empty after its constraints")
            except ValueError as exc:
                raise RegistryError(f"{source}: strategies.{name}.grid.{timeframe}: {exc}") from None
    return registry
