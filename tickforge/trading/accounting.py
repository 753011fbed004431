"""Positions, cash and PnL per (strategy, symbol) with average-cost accounting.

A fill that adds to a position moves its average cost; a fill against it realizes
``(price - average cost) x closed quantity x direction``; a fill larger than the position
closes it and opens the rest on the other side at the fill price (a flip). Unrealized PnL is
marked at the symbol's last trade price (``mark``), or at the last fill price before any trade
was seen. Fees are charged per fill and kept apart from realized PnL, so that after every fill::

    cash + sum(position x mark) == initial capital + realized + unrealized - fees
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from tickforge.trading.orders import Fill, Liquidity

_QTY_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Fees in basis points of notional plus a per-share charge; a negative maker rate is a rebate."""

    taker_bps: float = 0.0
    maker_bps: float = 0.0
    per_share: float = 0.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.taker_bps, self.maker_bps, self.per_share)):
            raise ValueError("fee rates must be finite")
        if self.taker_bps < 0 or self.per_share < 0:
            raise ValueError("taker fees and per-share fees cannot be negative")

    def fee(self, fill: Fill) -> float:
        bps = self.taker_bps if fill.liquidity is Liquidity.TAKER else self.maker_bps
        return fill.notional * bps / 10_000 + fill.quantity * self.per_share


@dataclass(slots=True)
class Position:
    strategy: str
    symbol: str
    quantity: float = 0.0  # signed: > 0 long, < 0 short
    average_cost: float = 0.0  # 0 when flat
    realized_pnl: float = 0.0
    fees: float = 0.0
    mark_price: float | None = None

    @property
    def unrealized_pnl(self) -> float:
        if self.quantity == 0.0 or self.mark_price is None:
            return 0.0
        return (self.mark_price - self.average_cost) * self.quantity

    @property
    def market_value(self) -> float:
        return 0.0 if self.quantity == 0.0 or self.mark_price is None else self.quantity * self.mark_price


@dataclass(frozen=True, slots=True)
class FillEffect:
    """What one fill did to its position: realized PnL and fee of this fill alone."""

    realized_pnl: float
    fee: float
    position_after: float


def apply_fill_to_position(position: Position, side_sign: int, quantity: float, price: float) -> float:
    """Update ``position`` for a fill; return the PnL it realized (pure average-cost rule)."""
    signed = side_sign * quantity
    held = position.quantity
    if held == 0.0 or (held > 0) == (signed > 0):
        total = held + signed
        position.average_cost = (position.average_cost * abs(held) + price * quantity) / abs(total)
        position.quantity = total
        return 0.0
    closed = min(quantity, abs(held))
    realized = (price - position.average_cost) * closed * (1 if held > 0 else -1)
    rest = held + signed
    if abs(rest) <= _QTY_EPS * max(1.0, quantity):
        position.quantity = 0.0
        position.average_cost = 0.0
    elif (rest > 0) != (held > 0):  # flipped: the remainder opens at the fill price
        position.quantity = rest
        position.average_cost = price
    else:
        position.quantity = rest
    position.realized_pnl += realized
    return realized


class Ledger:
    """Cash and positions of one account, broken down by strategy and symbol."""

    def __init__(self, initial_capital: float, fees: FeeSchedule | None = None) -> None:
        if not (math.isfinite(initial_capital) and initial_capital > 0):
            raise ValueError(f"initial capital must be positive and finite: {initial_capital!r}")
        self.initial_capital = float(initial_capital)
        self.cash = float(initial_capital)
        self.fee_schedule = fees or FeeSchedule()
        self._positions: dict[tuple[str, str], Position] = {}
        self._marks: dict[str, float] = {}

    def position(self, strategy: str, symbol: str) -> Position:
        key = (strategy, symbol)
        found = self._positions.get(key)
        if found is None:
            found = self._positions[key] = Position(strategy, symbol, mark_price=self._marks.get(symbol))
        return found

    def positions(self) -> Iterator[Position]:
        return iter(self._positions.values())

    def net_quantity(self, symbol: str) -> float:
        """Account-wide position in ``symbol`` across strategies."""
        return sum(p.quantity for p in self._positions.values() if p.symbol == symbol)

    def apply_fill(self, strategy: str, fill: Fill, fee: float | None = None) -> FillEffect:
        """Book one fill; ``fee`` overrides the schedule (a broker reports its own)."""
        charged = self.fee_schedule.fee(fill) if fee is None else fee
        if not math.isfinite(charged):
            raise ValueError(f"fee must be finite: {charged!r}")
        position = self.position(strategy, fill.symbol)
        realized = apply_fill_to_position(position, fill.side.sign, fill.quantity, fill.price)
        position.fees += charged
        self.cash -= fill.side.sign * fill.notional + charged
        if fill.symbol not in self._marks:  # no trade seen yet: value at the fill price
            position.mark_price = fill.price
        return FillEffect(realized, charged, position.quantity)

    def mark(self, symbol: str, last_trade_price: float) -> None:
        if not (math.isfinite(last_trade_price) and last_trade_price > 0):
            raise ValueError(f"mark price must be positive and finite: {last_trade_price!r}")
        self._marks[symbol] = last_trade_price
        for p in self._positions.values():
            if p.symbol == symbol:
                p.mark_price = last_trade_price

    # -------------------------------------------------------------- totals

    @property
    def realized_pnl(self) -> float:
        return sum(p.realized_pnl for p in self._positions.values())

    @property
    def unrealized_pnl(self) -> float:
        return sum(p.unrealized_pnl for p in self._positions.values())

    @property
    def fees(self) -> float:
        return sum(p.fees for p in self._positions.values())

    @property
    def market_value(self) -> float:
        return sum(p.market_value for p in self._positions.values())

    @property
    def equity(self) -> float:
        return self.cash + self.market_value

    def identity_gap(self) -> float:
        """``cash + positions x mark - (initial + realized + unrealized - fees)``; 0 up to rounding."""
        return self.equity - (self.initial_capital + self.realized_pnl + self.unrealized_pnl - self.fees)
