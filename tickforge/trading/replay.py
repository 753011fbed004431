"""The paper path over a recorded day: bars -> runner -> risk -> OMS -> matcher -> accounting.

The same kernels as the workers, driven by one event-time loop over frames (no files, no Kafka):

- Market events (quotes and trades of the picked symbols, :func:`market_events` order) go to the
  matcher, the risk layer's reference quotes and the ledger's marks.
- A bar ``[window_start, window_end)`` closes at ``window_end``: after every market event stamped
  before it and before any stamped at or after it. The runner decides there; its orders are
  checked by risk at that time (the last quote before the close is the reference), entered in the
  OMS, and sent to the matcher, which sees them at ``window_end + latency``.
- Venue events go to the OMS (illegal transitions are counted and logged, never applied), fills to
  the ledger (through risk, which releases budgets) and back to the runner; after every fill the
  ledger's identity is recorded.
- Sessions follow the symbol's class (:class:`~tickforge.trading.sessions.SessionRule`, the same
  :class:`~tickforge.trading.session_venue.SessionVenue` as the matcher worker): orders decided
  after the close are rejected, the session ends at the close (or the arrival of an order decided
  at the bell) and its working orders expire there; after the last market event, every session
  still open ends the same way (nothing else will come).

Session flags are the research engine's (:func:`split_bars` over the day's bars), so the runner's
decisions can be compared with the backtest's bar for bar.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.platform.contracts import Quote
from tickforge.research.bars import split_bars
from tickforge.trading.accounting import FeeSchedule
from tickforge.trading.events import OrderCanceled, OrderExpired, OrderRejected, VenueEvent
from tickforge.trading.limits import RiskLimits
from tickforge.trading.matching import MatchingConfig
from tickforge.trading.oms import IllegalTransition, OmsError, OrderManager, OrderRecord, Transition
from tickforge.trading.orders import Fill
from tickforge.trading.picks import Pick
from tickforge.trading.risk import RiskEngine, RiskRule, pick_sizer
from tickforge.trading.runner import Decision, RunnerOrder, StrategyRunner
from tickforge.trading.session_venue import SessionVenue
from tickforge.trading.sessions import SessionRule
from tickforge.trading.stream import market_events

log = logging.getLogger(__name__)
_RULES = frozenset(str(r) for r in RiskRule)

ORDER_SCHEMA = {
    "client_order_id": pl.String,
    "symbol": pl.String,
    "side": pl.String,
    "quantity": pl.Float64,
    "order_type": pl.String,
    "limit_price": pl.Float64,
    "decision_ts_ms": pl.Int64,
    "arrival_ts_ms": pl.Int64,
    "status": pl.String,
    "strategy": pl.String,
    "book": pl.String,
    "timeframe": pl.String,
    "bucket": pl.String,
    "reference_price": pl.Float64,
    "filled_quantity": pl.Float64,
    "average_fill_price": pl.Float64,
    "reject_rule": pl.String,
    "reason": pl.String,
    "time_in_force": pl.String,
}
TRANSITION_SCHEMA = {
    "client_order_id": pl.String,
    "seq": pl.Int32,
    "from_status": pl.String,
    "to_status": pl.String,
    "ts_ms": pl.Int64,
    "reason": pl.String,
}
FILL_SCHEMA = {
    "client_order_id": pl.String,
    "symbol": pl.String,
    "side": pl.String,
    "ts_ms": pl.Int64,
    "price": pl.Float64,
    "quantity": pl.Float64,
    "liquidity": pl.String,
    "fill_id": pl.String,
    "book": pl.String,
    "fee": pl.Float64,
}
POSITION_SCHEMA = {
    "ts_ms": pl.Int64,
    "fill_id": pl.String,
    "book": pl.String,
    "strategy": pl.String,
    "symbol": pl.String,
    "quantity": pl.Float64,
    "average_cost": pl.Float64,
    "mark_price": pl.Float64,
    "realized_pnl": pl.Float64,
    "unrealized_pnl": pl.Float64,
    "fees": pl.Float64,
}
PNL_SCHEMA = {
    "ts_ms": pl.Int64,
    "fill_id": pl.String,
    "cash": pl.Float64,
    "market_value": pl.Float64,
    "realized_pnl": pl.Float64,
    "unrealized_pnl": pl.Float64,
    "fees": pl.Float64,
    "equity": pl.Float64,
    "identity_gap": pl.Float64,
}
DECISION_SCHEMA = {
    "book": pl.String,
    "strategy": pl.String,
    "symbol": pl.String,
    "timeframe": pl.String,
    "params": pl.String,
    "window_start": pl.Int64,
    "decision_ts_ms": pl.Int64,
    "close": pl.Float64,
    "target": pl.Int8,
    "previous": pl.Int8,
    "session_last": pl.Boolean,
}


@dataclass(frozen=True)
class ReplayResult:
    orders: pl.DataFrame  # ORDER_SCHEMA, one row per order with its final status
    transitions: pl.DataFrame  # TRANSITION_SCHEMA: the OMS audit trail, in the order applied
    fills: pl.DataFrame  # FILL_SCHEMA
    positions: pl.DataFrame  # POSITION_SCHEMA: the touched position after every fill, then each at the end
    pnl: pl.DataFrame  # PNL_SCHEMA: the account after every fill, then at the end (fill_id null)
    decisions: pl.DataFrame  # DECISION_SCHEMA: every pick's decision at every bar
    rejections: dict[str, int]  # risk rule -> orders it rejected
    illegal_transitions: int
    refused_bars: list[str]


@dataclass(frozen=True, slots=True)
class _Bar:
    """A bar of the research split (:func:`split_bars`), which keeps no trade count nor open/close
    trade times: :class:`~tickforge.platform.contracts.Bar` cannot be built from it. It refuses
    what that contract refuses of the fields it has."""

    symbol: str
    timeframe: str
    window_start: int
    window_end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    notional: float

    def __post_init__(self) -> None:
        if not self.low <= min(self.open, self.close) or not max(self.open, self.close) <= self.high:
            raise ValueError(f"bar {self.symbol} {self.window_start}: open/close outside [low, high]")
        if not self.volume > 0 or self.window_end <= self.window_start:
            raise ValueError(f"bar {self.symbol} {self.window_start}: empty bar or window")
        vwap, slack = self.notional / self.volume, 1e-9 * self.high
        if not self.low - slack <= vwap <= self.high + slack:
            raise ValueError(f"bar {self.symbol} {self.window_start}: vwap {vwap} outside [low, high]")


@dataclass
class _Loop:
    picks: Sequence[Pick]
    risk: RiskEngine
    runner: StrategyRunner
    matcher: SessionVenue
    oms: OrderManager = field(default_factory=OrderManager)
    now: int = 0
    meta: dict[str, RunnerOrder] = field(default_factory=dict)
    fills: list[dict] = field(default_factory=list)
    positions: list[dict] = field(default_factory=list)
    pnl: list[dict] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    illegal: int = 0
    refused: list[str] = field(default_factory=list)

    def bar(self, bar: _Bar, session_last: bool) -> None:
        self.now = bar.window_end
        step = self.runner.on_bar(bar, session_last)
        self.decisions += step.decisions
        self.refused += step.refused
        for intent in step.orders:
            self.send(intent)

    def send(self, intent: RunnerOrder) -> None:
        order = intent.order
        self.meta[order.client_order_id] = intent
        self.oms.submit(order)
        decision = self.risk.check(order, intent.pick.bucket)
        if decision.repeat:
            return
        if not decision.approved:
            self.oms.reject(order.client_order_id, self.now, str(decision.rule))
            self.runner.on_order_closed(order.client_order_id)
            return
        self.venue(self.matcher.submit(order))

    def venue(self, events: list[VenueEvent]) -> None:
        for event in events:
            try:
                self.oms.apply(event)
            except IllegalTransition as e:
                self.illegal += 1
                log.error("illegal order transition", extra={"error": str(e)})
                continue
            except OmsError as e:
                self.illegal += 1
                log.error("venue event refused by the OMS", extra={"error": str(e)})
                continue
            if isinstance(event, Fill):
                self.fill(event)
            elif isinstance(event, (OrderRejected, OrderCanceled, OrderExpired)):
                self.risk.on_order_closed(event.client_order_id)
                self.runner.on_order_closed(event.client_order_id)

    def fill(self, fill: Fill) -> None:
        book = self.meta[fill.client_order_id].pick.book
        fees_before = self.risk.ledger.fees
        self.risk.on_fill(fill)
        self.runner.on_fill(fill)
        ledger = self.risk.ledger
        self.fills.append(fill_row(fill, book, ledger.fees - fees_before))
        self.positions.append(_position_row(ledger.position(book, fill.symbol), fill.ts_ms, fill.fill_id))
        self.pnl.append(_pnl_row(self.risk, fill.ts_ms, fill.fill_id))


def replay(
    bars: dict[str, pl.DataFrame],
    quotes: pl.DataFrame,
    trades: pl.DataFrame,
    picks: Sequence[Pick],
    limits: RiskLimits,
    latency_ms: int = 5,
    fees: FeeSchedule | None = None,
    matching: MatchingConfig | None = None,
    sessions: SessionRule | None = None,
) -> ReplayResult:
    """Run the paper path over one recorded stretch; ``bars`` maps timeframe -> the platform's
    bar frame (``symbol, window_start, window_end, open, high, low, close, volume, notional``);
    ``sessions`` the session rule (the default settings' symbol classes when not given)."""
    symbols = sorted({p.symbol for p in picks})
    closes = _bar_closes(bars, picks)
    clock = _Clock()
    risk = RiskEngine(limits, clock, fees)
    venue = SessionVenue(sessions, matching)
    runner = StrategyRunner(picks, pick_sizer(limits, venue.rule.symbol_classes), latency_ms)
    loop = _Loop(picks, risk, runner, venue)
    clock.loop = loop
    wanted = pl.col("symbol").is_in(symbols)
    events = market_events(quotes.filter(wanted), trades.filter(wanted))
    k = 0
    marks: dict[str, float] = {}
    for ev in events:
        while k < len(closes) and closes[k][0] <= ev.ts_ms:
            loop.bar(closes[k][1], closes[k][2])
            k += 1
        loop.now = ev.ts_ms
        if isinstance(ev, Quote):
            risk.on_quote(ev.symbol, ev.bid, ev.ask)
            loop.venue(loop.matcher.on_quote(ev))
        else:
            loop.venue(loop.matcher.on_trade(ev))
            if marks.get(ev.symbol) != ev.price:  # the same print price moves no mark
                marks[ev.symbol] = ev.price
                risk.on_trade(ev.symbol, ev.price)
    for _, bar, last in closes[k:]:
        loop.bar(bar, last)
    end = max([loop.now, *(r.order.arrival_ts_ms for r in loop.meta.values())])
    loop.now = end
    loop.venue(loop.matcher.end_all())
    ledger = risk.ledger
    loop.positions += [_position_row(p, end, None) for p in ledger.positions()]
    loop.pnl.append(_pnl_row(risk, end, None))
    return ReplayResult(
        orders=_orders_frame(loop),
        transitions=transitions_frame(loop.oms),
        fills=pl.DataFrame(loop.fills, schema=FILL_SCHEMA),
        positions=pl.DataFrame(loop.positions, schema=POSITION_SCHEMA),
        pnl=pl.DataFrame(loop.pnl, schema=PNL_SCHEMA),
        decisions=_decisions_frame(loop.decisions, picks),
        rejections={str(rule): n for rule, n in risk.rejections.items() if n},
        illegal_transitions=loop.illegal,
        refused_bars=loop.refused,
    )


class _Clock:
    """Event time of the replay loop (what the risk layer's throttles and state changes see)."""

    loop: _Loop | None = None

    def __call__(self) -> int:
        return self.loop.now if self.loop is not None else 0


def _bar_closes(bars: dict[str, pl.DataFrame], picks: Sequence[Pick]) -> list[tuple[int, _Bar, bool]]:
    """Every bar the picks need as (close time, bar, ends its session), in close-time order.

    Session flags come from the research engine's split of the same bars."""
    out: list[tuple[int, int, _Bar, bool]] = []
    for timeframe in sorted({p.timeframe for p in picks}):
        frame = bars.get(timeframe)
        if frame is None:
            raise ValueError(f"no {timeframe} bars for the picks on {timeframe}")
        wanted = {p.symbol for p in picks if p.timeframe == timeframe}
        series, _ = split_bars(frame.filter(pl.col("symbol").is_in(sorted(wanted))), timeframe)
        length = timeframe_ms(timeframe)
        for s in series:
            for i in range(len(s)):
                start = int(s.window_start[i])
                bar = _Bar(
                    s.symbol,
                    timeframe,
                    start,
                    start + length,
                    float(s.open[i]),
                    float(s.high[i]),
                    float(s.low[i]),
                    float(s.close[i]),
                    float(s.volume[i]),
                    float(s.notional[i]),
                )
                out.append((start + length, length, bar, bool(s.session_last[i])))
    # at one close time, shorter timeframes first (a 1m bar before the 5m bar it ends with)
    out.sort(key=lambda c: (c[0], c[1], c[2].symbol))
    return [(t, bar, last) for t, _, bar, last in out]


def _position_row(p, ts_ms: int, fill_id: str | None) -> dict:
    return {
        "ts_ms": ts_ms,
        "fill_id": fill_id,
        "book": p.strategy,
        "strategy": p.strategy.split("/")[0],
        "symbol": p.symbol,
        "quantity": p.quantity,
        "average_cost": p.average_cost,
        "mark_price": p.mark_price,
        "realized_pnl": p.realized_pnl,
        "unrealized_pnl": p.unrealized_pnl,
        "fees": p.fees,
    }


def _pnl_row(risk: RiskEngine, ts_ms: int, fill_id: str | None) -> dict:
    ledger = risk.ledger
    return {
        "ts_ms": ts_ms,
        "fill_id": fill_id,
        "cash": ledger.cash,
        "market_value": ledger.market_value,
        "realized_pnl": ledger.realized_pnl,
        "unrealized_pnl": ledger.unrealized_pnl,
        "fees": ledger.fees,
        "equity": ledger.equity,
        "identity_gap": ledger.identity_gap(),
    }


def _orders_frame(loop: _Loop) -> pl.DataFrame:
    rows = []
    for record in loop.oms.records():
        intent = loop.meta[record.order.client_order_id]
        last = record.transitions[-1]
        rejected_by_risk = last.to_status == "REJECTED" and last.reason in _RULES
        rows.append(
            {
                **order_row(record),
                "strategy": intent.pick.strategy,
                "book": intent.pick.book,
                "timeframe": intent.pick.timeframe,
                "bucket": str(intent.pick.bucket),
                "reference_price": intent.reference_price if math.isfinite(intent.reference_price) else None,
                "reject_rule": last.reason if rejected_by_risk else None,
            }
        )
    return pl.DataFrame(rows, schema=ORDER_SCHEMA)


def order_row(record: OrderRecord) -> dict:
    """An order and where it stands (ORDER_SCHEMA's columns but the pick's and risk's; its
    ``strategy`` is the order's, which names the pick's book)."""
    o = record.order
    return {
        "client_order_id": o.client_order_id,
        "symbol": o.symbol,
        "side": str(o.side),
        "quantity": o.quantity,
        "order_type": str(o.order_type),
        "limit_price": o.limit_price,
        "decision_ts_ms": o.decision_ts_ms,
        "arrival_ts_ms": o.arrival_ts_ms,
        "status": str(record.status),
        "strategy": o.strategy,
        "filled_quantity": record.filled_quantity,
        "average_fill_price": record.average_fill_price,
        "reason": record.transitions[-1].reason,
        "time_in_force": str(o.time_in_force),
    }


def transitions_frame(oms: OrderManager) -> pl.DataFrame:
    """Every transition of every order of ``oms`` (its audit trail), in the order applied."""
    return pl.DataFrame([transition_row(t) for t in oms.audit_trail()], schema=TRANSITION_SCHEMA)


def fill_row(fill: Fill, book: str | None, fee: float) -> dict:
    """A fill as FILL_SCHEMA's row."""
    return {
        "client_order_id": fill.client_order_id,
        "symbol": fill.symbol,
        "side": str(fill.side),
        "ts_ms": fill.ts_ms,
        "price": fill.price,
        "quantity": fill.quantity,
        "liquidity": str(fill.liquidity),
        "fill_id": fill.fill_id,
        "book": book,
        "fee": fee,
    }


def transition_row(t: Transition) -> dict:
    return {
        "client_order_id": t.client_order_id,
        "seq": t.seq,
        "from_status": None if t.from_status is None else str(t.from_status),
        "to_status": str(t.to_status),
        "ts_ms": t.ts_ms,
        "reason": t.reason,
    }


def _decisions_frame(decisions: list[Decision], picks: Sequence[Pick]) -> pl.DataFrame:
    by_book = {(p.symbol, p.book): p for p in picks}
    rows = [
        {
            "book": d.book,
            "strategy": by_book[(d.symbol, d.book)].strategy,
            "symbol": d.symbol,
            "timeframe": d.timeframe,
            "params": by_book[(d.symbol, d.book)].params_json,
            "window_start": d.window_start_ms,
            "decision_ts_ms": d.decision_ts_ms,
            "close": d.close,
            "target": d.target,
            "previous": d.previous,
            "session_last": d.session_last,
        }
        for d in decisions
    ]
    return pl.DataFrame(rows, schema=DECISION_SCHEMA)
