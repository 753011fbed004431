"""Pre-trade risk: per-order checks, throttles, budgets per bucket and the trading state.

Checks run in this order and the first failing one names the rejection (:class:`RiskRule`):
trading state, maximum quantity, a reference quote, price collar, maximum notional, maximum
position, bucket budget, then the throttles (a token is spent only by an order that passed
everything else, per symbol and in total).

Budget: a bucket's budget is ``capital x share``; it is used by the cost of the positions of the
(strategy, symbol) pairs assigned to it plus the notional reserved by its open orders that add
exposure. A fill turns its part of the reservation into position (a reducing fill frees budget);
a cancel, reject or expiry releases what is left (:meth:`RiskEngine.on_order_closed`).

Trading state: a daily loss at or over the limit moves trading to ``daily_loss_action``, a
drawdown from peak equity at or over the limit to ``drawdown_action``; automatic moves only
tighten. ``set_state`` moves it by hand (``resume`` is only by hand).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from tickforge.platform.settings import SymbolClasses
from tickforge.trading.accounting import FeeSchedule, Ledger
from tickforge.trading.control import ControlCommand
from tickforge.trading.limits import Bucket, RiskLimits, TradingState
from tickforge.trading.orders import Fill, Order, OrderType, Side
from tickforge.trading.picks import Pick
from tickforge.trading.throttle import TokenBucket

log = logging.getLogger(__name__)

Clock = Callable[[], int]
"""Current time in epoch ms (event time in a replay)."""


class RiskRule(StrEnum):
    TRADING_HALTED = "trading_halted"
    TRADING_REDUCING = "trading_reducing"
    MAX_QUANTITY = "max_quantity"
    NO_REFERENCE_PRICE = "no_reference_price"
    PRICE_COLLAR = "price_collar"
    MAX_NOTIONAL = "max_notional"
    MAX_POSITION = "max_position"
    BUCKET_BUDGET = "bucket_budget"
    THROTTLE_SYMBOL = "throttle_symbol"
    THROTTLE_TOTAL = "throttle_total"


@dataclass(frozen=True, slots=True)
class RiskDecision:
    client_order_id: str
    approved: bool
    rule: RiskRule | None  # None exactly when approved
    detail: str
    ts_ms: int
    repeat: bool = False  # the same order checked again: the first decision, not a new one


@dataclass(frozen=True, slots=True)
class StateChange:
    ts_ms: int
    from_state: TradingState
    to_state: TradingState
    reason: str


@dataclass(slots=True)
class _Reservation:
    order: Order
    bucket: Bucket
    price: float  # reference price of the notional
    remaining: float
    adds_exposure: bool


@dataclass(slots=True)
class _LastQuote:
    bid: float | None = None
    ask: float | None = None

    @property
    def mid(self) -> float | None:
        return (self.bid + self.ask) / 2 if self.bid is not None and self.ask is not None else None


def _price(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) and x > 0 else None


def target_quantity(limits: RiskLimits, bucket: Bucket, weight: float, price: float, lot_size: float = 1.0) -> float:
    """Order size for a pick: its ``weight`` (0..1] of its bucket's budget at ``price``, whole lots."""
    if not (math.isfinite(weight) and 0 < weight <= 1):
        raise ValueError(f"pick weight must be in (0, 1]: {weight!r}")
    if not (math.isfinite(price) and price > 0) or not (math.isfinite(lot_size) and lot_size > 0):
        raise ValueError("price and lot size must be positive and finite")
    lots = math.floor(limits.bucket_budget(bucket) * weight / price / lot_size + 1e-9)
    return round(lots * lot_size, 12)  # 12173 x 0.00001 is 0.12173, not 0.12173000000000001


def pick_sizer(limits: RiskLimits, classes: SymbolClasses) -> Callable[[Pick, float], float]:
    """The runner's sizing: a pick's target quantity at a price, in its symbol's lots."""

    def size(pick: Pick, price: float) -> float:
        lot = limits.lot_size(pick.symbol, classes.of(pick.symbol))
        return target_quantity(limits, pick.bucket, pick.weight, price, lot)

    return size


class RiskEngine:
    def __init__(self, limits: RiskLimits, clock: Clock, fees: FeeSchedule | None = None) -> None:
        self._clock = clock
        self.ledger = Ledger(limits.capital, fees)
        self.state = TradingState.ACTIVE
        self.state_changes: list[StateChange] = []
        self._quotes: dict[str, _LastQuote] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._decisions: dict[str, RiskDecision] = {}
        self._bucket_of: dict[tuple[str, str], Bucket] = {}
        self._fill_ids: set[str] = set()
        self._symbol_throttles: dict[str, TokenBucket] = {}
        self.rejections: dict[RiskRule, int] = {rule: 0 for rule in RiskRule}
        self._install(limits)
        self.day_start_equity = self.peak_equity = self.ledger.equity

    # -------------------------------------------------------------- configuration and state

    @property
    def limits(self) -> RiskLimits:
        return self._limits

    def update_limits(self, limits: RiskLimits) -> None:
        """New limits (a reloaded file); throttles restart full when their rates change."""
        self._install(limits)

    def _install(self, limits: RiskLimits) -> None:
        old = getattr(self, "_limits", None)
        self._limits = limits
        if old is None or old.throttle != limits.throttle:
            t = limits.throttle
            self._total_throttle = TokenBucket(t.total_orders_per_second, t.total_burst, self._clock())
            self._symbol_throttles = {}

    def set_state(self, state: TradingState, reason: str) -> None:
        """Move the trading state by hand (halt, reduce, resume)."""
        self._move(TradingState(state), reason)

    def apply_control(self, command: ControlCommand) -> bool:
        """A command set by hand on the control topic; True when it moved the state."""
        before = self.state
        self.set_state(command.state, command.describe())
        return self.state is not before

    def start_day(self) -> None:
        """A new trading day: the daily loss counts from the equity now."""
        self.day_start_equity = self.ledger.equity

    # -------------------------------------------------------------- market and fills

    def on_quote(self, symbol: str, bid: float | None, ask: float | None) -> None:
        q = self._quotes.setdefault(symbol, _LastQuote())
        q.bid, q.ask = _price(bid), _price(ask)

    def on_trade(self, symbol: str, price: float) -> None:
        if _price(price) is None:
            return
        self.ledger.mark(symbol, price)
        self._watch_pnl()

    def on_fill(self, fill: Fill, strategy: str | None = None) -> bool:
        """Book a fill (False for a fill id already booked). ``strategy`` is needed only for a
        fill of an order this engine did not approve."""
        if fill.fill_id in self._fill_ids:
            return False
        reservation = self._reservations.get(fill.client_order_id)
        owner = reservation.order.strategy if reservation is not None else strategy
        if owner is None:
            raise ValueError(f"fill {fill.fill_id} of an unknown order needs its strategy")
        self._fill_ids.add(fill.fill_id)
        if reservation is not None:
            reservation.remaining = max(0.0, reservation.remaining - fill.quantity)
            if reservation.remaining <= 1e-9 * reservation.order.quantity:
                del self._reservations[fill.client_order_id]
        self.ledger.apply_fill(owner, fill)
        self._watch_pnl()
        return True

    def on_order_closed(self, client_order_id: str) -> None:
        """The order was canceled, rejected or expired: release what it still reserved."""
        self._reservations.pop(client_order_id, None)

    # -------------------------------------------------------------- the check

    def check(self, order: Order, bucket: Bucket) -> RiskDecision:
        previous = self._decisions.get(order.client_order_id)
        if previous is not None:
            return RiskDecision(
                previous.client_order_id, previous.approved, previous.rule, previous.detail, previous.ts_ms, repeat=True
            )
        now = self._clock()
        bucket = Bucket(bucket)
        rule, detail, price, adds = self._evaluate(order, bucket, now)
        decision = RiskDecision(order.client_order_id, rule is None, rule, detail, now)
        self._decisions[order.client_order_id] = decision
        if rule is None:
            self._bucket_of[(order.strategy, order.symbol)] = bucket
            self._reservations[order.client_order_id] = _Reservation(order, bucket, price, order.quantity, adds)
        else:
            self.rejections[rule] += 1
        return decision

    def _evaluate(self, order: Order, bucket: Bucket, now: int) -> tuple[RiskRule | None, str, float, bool]:
        limits = self._limits
        held = self.ledger.net_quantity(order.symbol)
        pending = sum(
            r.remaining
            for r in self._reservations.values()
            if r.order.symbol == order.symbol and r.order.side is order.side
        )
        reduces = order.side.sign * held < 0 and order.quantity + pending <= abs(held) + 1e-9
        if self.state is TradingState.HALTED:
            return RiskRule.TRADING_HALTED, "trading is halted", 0.0, False
        if self.state is TradingState.REDUCING and not reduces:
            return RiskRule.TRADING_REDUCING, f"only reducing orders; position {held:g}", 0.0, False
        max_qty, max_notional, max_position = limits.for_symbol(order.symbol)
        if order.quantity > max_qty:
            return RiskRule.MAX_QUANTITY, f"quantity {order.quantity:g} > {max_qty:g}", 0.0, False
        quote = self._quotes.get(order.symbol)
        mid = quote.mid if quote is not None else None
        if mid is None:
            return RiskRule.NO_REFERENCE_PRICE, f"no two-sided quote for {order.symbol}", 0.0, False
        if order.order_type is OrderType.LIMIT:
            assert order.limit_price is not None
            off_bps = abs(order.limit_price - mid) / mid * 10_000
            if off_bps > limits.price_collar_bps:
                return (
                    RiskRule.PRICE_COLLAR,
                    f"limit {order.limit_price:g} is {off_bps:.1f} bps from mid {mid:g} (> {limits.price_collar_bps:g})",
                    0.0,
                    False,
                )
            price = order.limit_price
        else:  # a market order pays the opposite best
            assert quote is not None
            price = (quote.ask if order.side is Side.BUY else quote.bid) or mid
        notional = order.quantity * price
        if notional > max_notional:
            return RiskRule.MAX_NOTIONAL, f"notional {notional:,.2f} > {max_notional:,.2f}", price, False
        projected = held + order.side.sign * (pending + order.quantity)
        adds = abs(projected) > abs(held + order.side.sign * pending) - 1e-9 and not reduces
        if adds and abs(projected) > max_position + 1e-9:
            return RiskRule.MAX_POSITION, f"position would reach {projected:g} (max {max_position:g})", price, adds
        if adds:
            budget = limits.bucket_budget(bucket)
            used = self.budget_used(bucket)
            if used + notional > budget + 1e-6:
                return (
                    RiskRule.BUCKET_BUDGET,
                    f"{bucket} budget {budget:,.2f}: used {used:,.2f} + {notional:,.2f}",
                    price,
                    adds,
                )
        symbol_throttle = self._symbol_throttle(order.symbol, now)
        if symbol_throttle.available(now) < 1:
            return (
                RiskRule.THROTTLE_SYMBOL,
                f"over {limits.throttle.per_symbol_orders_per_second:g}/s for {order.symbol}",
                price,
                adds,
            )
        if self._total_throttle.available(now) < 1:
            return RiskRule.THROTTLE_TOTAL, f"over {limits.throttle.total_orders_per_second:g}/s in total", price, adds
        symbol_throttle.try_take(now)
        self._total_throttle.try_take(now)
        return None, "approved", price, adds

    # -------------------------------------------------------------- budget

    def budget_used(self, bucket: Bucket) -> float:
        positions = sum(
            abs(p.quantity) * p.average_cost
            for p in self.ledger.positions()
            if self._bucket_of.get((p.strategy, p.symbol)) is bucket
        )
        reserved = sum(
            r.remaining * r.price for r in self._reservations.values() if r.bucket is bucket and r.adds_exposure
        )
        return positions + reserved

    def budget_left(self, bucket: Bucket) -> float:
        return self._limits.bucket_budget(bucket) - self.budget_used(bucket)

    # -------------------------------------------------------------- internals

    def _symbol_throttle(self, symbol: str, now: int) -> TokenBucket:
        found = self._symbol_throttles.get(symbol)
        if found is None:
            t = self._limits.throttle
            found = self._symbol_throttles[symbol] = TokenBucket(
                t.per_symbol_orders_per_second, t.per_symbol_burst, now
            )
        return found

    def _watch_pnl(self) -> None:
        equity = self.ledger.equity
        self.peak_equity = max(self.peak_equity, equity)
        limits = self._limits
        loss = self.day_start_equity - equity
        if limits.daily_loss_limit is not None and loss >= limits.daily_loss_limit:
            self._tighten(limits.daily_loss_action, f"daily loss {loss:,.2f} >= {limits.daily_loss_limit:,.2f}")
        drawdown = (self.peak_equity - equity) / self.peak_equity
        if limits.max_drawdown is not None and drawdown >= limits.max_drawdown:
            self._tighten(limits.drawdown_action, f"drawdown {drawdown:.2%} >= {limits.max_drawdown:.2%}")

    def _tighten(self, state: TradingState, reason: str) -> None:
        if state.severity > self.state.severity:
            self._move(state, reason)

    def _move(self, state: TradingState, reason: str) -> None:
        if state is self.state:
            return
        change = StateChange(self._clock(), self.state, state, reason)
        self.state_changes.append(change)
        self.state = state
        log.warning("trading state changed", extra={"from": change.from_state, "to": state, "reason": reason})
