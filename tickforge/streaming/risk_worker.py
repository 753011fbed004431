"""Risk worker: orders -> ``orders.approved`` | ``orders.rejected``, exactly once.

Each order is checked by :class:`~tickforge.trading.risk.RiskEngine` (the offline replay's) against
the market as it stood at the order's decision time: partition ``p`` of ``orders`` (the strategy
runners' output) and of ``ticks`` (quotes for the reference price and the collar, prints for the
marks) are merged in event time (:mod:`tickforge.streaming.merge`), orders first at the same
millisecond, as the offline replay applies a bar's decision before the ticks stamped at its close.

- Trading state: the control topic through a side reader (every instance reads all of it; the
  command in force applies from the next order), plus the daily loss and drawdown limits.
- Limits: a YAML file re-read on change (at most once a second); a bad file is refused and the
  previous limits stay.
- Exposure: there is no fill feedback (fills depend on the approved orders, so merging them in
  event time would wait on itself): an approved order counts as filled at its decision bar's
  close, the strategy runner's own assumption, which keeps position, budget and loss limits on
  what was ordered.
- State is per New York day: every input is needed until the next New York midnight, so a
  restart replays the day silently and decides exactly as before (a repeated order id is
  recognised and emits nothing).
- Watermark markers go to both outputs once per transaction, so the matcher downstream knows no
  earlier decision will come on the partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from confluent_kafka import Message

from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.contracts import Quote, Trade
from tickforge.platform.io.kafka import topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.platform.topics import ORDERS, ORDERS_APPROVED, ORDERS_REJECTED, TICKS
from tickforge.research.bars import NEW_YORK, next_ny_midnight_ms
from tickforge.streaming import metrics
from tickforge.streaming.codec import dead_letter_for
from tickforge.streaming.merge import merged_ports
from tickforge.streaming.order_messages import (
    OrderMessage,
    encode_order_message,
    order_or_market_items,
)
from tickforge.streaming.runtime import Output, TransactionalWorker
from tickforge.trading.control import ControlCommand
from tickforge.trading.io import DEFAULT_LIMITS, LimitsFile
from tickforge.trading.orders import Fill, Liquidity
from tickforge.trading.risk import RiskDecision, RiskEngine, RiskRule

log = logging.getLogger(__name__)

NAME = "risk"
# Markers downstream at most this often in event time (a marker per tick would double the traffic).
MARKER_STEP_MS = 100


def day_end(ts_ms: int) -> int:
    """The next New York midnight after ``ts_ms``: where the day's state is no longer needed."""
    return next_ny_midnight_ms(datetime.fromtimestamp(ts_ms // 1000, NEW_YORK).date())


class RiskTask:
    """The risk layer's state for one partition: a :class:`~tickforge.streaming.merge.MergedTask`
    over ``orders`` and ``ticks``."""

    def __init__(
        self,
        orders_topic: str,
        ticks_topic: str,
        approved_topic: str,
        rejected_topic: str,
        limits: LimitsFile,
        control: Callable[[], ControlCommand | None],
        worker: str = NAME,
        account: str = "paper",
        reload_every_s: float = 1.0,
    ) -> None:
        self.orders_topic, self.ticks_topic = orders_topic, ticks_topic
        self.approved_topic, self.rejected_topic = approved_topic, rejected_topic
        self._limits, self._control = limits, control
        self._worker, self._account = worker, account
        self._now = NO_WATERMARK
        self._day_end: int | None = None
        self._engine: RiskEngine | None = None
        self._applied: ControlCommand | None = None
        self._marks: dict[str, float] = {}
        self._reload_every_s, self._reloaded_at = reload_every_s, 0.0
        self._frontier = NO_WATERMARK
        self._marked = NO_WATERMARK
        self.decisions: list[RiskDecision] = []

    @property
    def engine(self) -> RiskEngine | None:
        return self._engine

    # -- MergedTask -------------------------------------------------------------------------
    def decode(self, topic: str, msg: Message) -> Sequence[tuple[int, Any]]:
        return order_or_market_items(msg, self.orders_topic)

    def retain_until(self, topic: str, ts_ms: int, item: Any) -> int:
        return day_end(ts_ms)

    def on_item(self, topic: str, ts_ms: int, item: Any, msg: Message, out: Output) -> None:
        self._now = max(self._now, ts_ms)
        engine = self._day(ts_ms)
        if isinstance(item, Quote):
            engine.on_quote(item.symbol, item.bid, item.ask)
        elif isinstance(item, Trade):
            if self._marks.get(item.symbol) != item.price:  # the same print price moves no mark
                self._marks[item.symbol] = item.price
                engine.on_trade(item.symbol, item.price)
        else:
            self._order(item, msg, engine, out)

    def on_frontier(self, frontier_ms: int, out: Output) -> None:
        self._frontier = frontier_ms

    def close(self, out: Output) -> None:
        """Forward the watermark (in steps of ``MARKER_STEP_MS`` of event time): no earlier
        decision will follow on this partition."""
        if self._frontier >= self._marked + MARKER_STEP_MS:
            out.marker(self.approved_topic, self._frontier)
            out.marker(self.rejected_topic, self._frontier)
            if not out.replaying:
                self._marked = self._frontier

    # -- the checks -------------------------------------------------------------------------
    def _day(self, ts_ms: int) -> RiskEngine:
        end = day_end(ts_ms)
        if self._engine is None or self._day_end is None or end > self._day_end:
            # a New York day starts flat: intraday books closed at the session's end
            self._engine = RiskEngine(self._limits.current, lambda: self._now)
            self._day_end, self._applied, self._marks = end, None, {}
        return self._engine

    def _order(self, message: OrderMessage, msg: Message, engine: RiskEngine, out: Output) -> None:
        order = message.order
        assert self._day_end is not None
        if day_end(order.decision_ts_ms) < self._day_end:
            # decided on a day that is over (it reached us late): that day's state is gone
            detail = f"order {order.client_order_id} decided on an earlier New York day than the one in progress"
            out.dead_letter(dead_letter_for(msg, Reason.LATE, self.orders_topic, detail))
            return
        self._sync(engine)
        decision = engine.check(order, message.bucket)
        metrics.TRADING_STATE.labels(worker=self._worker, account=self._account).set(engine.state.severity)
        if decision.repeat:
            return
        self.decisions.append(decision)
        if decision.approved:
            out.send(self.approved_topic, order.symbol, encode_order_message(message, risk_ts_ms=decision.ts_ms))
            engine.on_fill(
                Fill(
                    f"{order.client_order_id}.assumed",
                    order.client_order_id,
                    order.symbol,
                    order.side,
                    order.arrival_ts_ms,
                    message.reference_price,
                    order.quantity,
                    Liquidity.TAKER,
                )
            )
            return
        out.send(
            self.rejected_topic,
            order.symbol,
            encode_order_message(message, risk_ts_ms=decision.ts_ms, rule=str(decision.rule), detail=decision.detail),
        )
        if not out.replaying:
            metrics.RISK_REJECTIONS.labels(worker=self._worker, rule=str(decision.rule)).inc()

    def _sync(self, engine: RiskEngine) -> None:
        """The limits file (re-read at most every ``reload_every_s``) and the command in force."""
        wall = time.monotonic()
        if wall - self._reloaded_at >= self._reload_every_s:
            self._reloaded_at = wall
            if self._limits.reload_if_changed().changed:
                engine.update_limits(self._limits.current)
        if engine.limits is not self._limits.current:
            engine.update_limits(self._limits.current)
        command = self._control()
        if command is not None and command is not self._applied:
            engine.apply_control(command)
            self._applied = command


def make_worker(
    settings: Settings, instance_id: str = "0", limits: str | None = None, account: str = "paper"
) -> TransactionalWorker:
    """The risk worker over ``orders`` and ``ticks``; ``limits`` the YAML file of limits (the
    packaged one by default), ``account`` the control scope it obeys."""
    from tickforge.streaming.trading_control import ControlReader

    control = ControlReader(settings, account)
    control.catch_up()  # never decide on a trading state not known yet

    def in_force() -> ControlCommand | None:
        control.poll()
        return control.in_force()

    limits_source = LimitsFile(limits or DEFAULT_LIMITS)
    # Every series from the start: the state in force, and each rule's rejections at zero (a
    # dashboard shows "no rejections", not "no data", before the first order).
    state = RiskEngine(limits_source.current, lambda: 0)
    command = control.in_force()
    if command is not None:
        state.apply_control(command)
    metrics.TRADING_STATE.labels(worker=NAME, account=account).set(state.state.severity)
    for rule in RiskRule:
        metrics.RISK_REJECTIONS.labels(worker=NAME, rule=str(rule)).inc(0)
    orders, ticks = topic_name(settings, ORDERS), topic_name(settings, TICKS)
    approved, rejected = topic_name(settings, ORDERS_APPROVED), topic_name(settings, ORDERS_REJECTED)
    return TransactionalWorker(
        settings,
        NAME,
        [ORDERS, TICKS],
        merged_ports(
            [orders, ticks],
            lambda partition: RiskTask(orders, ticks, approved, rejected, limits_source, in_force, NAME, account),
        ),
        instance_id=instance_id,
    )
