"""The paper matcher under the session rule: one matcher per symbol and session day.

Used by both paper paths (the offline replay and the matcher worker), so they close sessions alike:

- An order decided after its symbol's session closed (or arriving after the session ended) is
  rejected (``session_closed``) at its arrival. An order decided at the bell (the session's last
  bar closes at the close) belongs to the session: it reaches the book ``latency`` after the
  close, against the book as it stood then.
- The session ends at the later of the close and the arrival of its last order: in-flight orders
  meet the book, then working orders expire (terminal ``OrderExpired`` events) and later market
  events of the day fill nothing (no after-hours fills).
- The first event of a later day ends the previous day's session the same way before anything of
  the new day; an event of a day older than the current one is refused with :class:`StaleSession`
  (the caller dead-letters it): it never resets the newer day's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickforge.trading.events import OrderRejected, VenueEvent
from tickforge.trading.matching import MatchingConfig, PaperMatcher, QuoteLike, TradeLike
from tickforge.trading.orders import Order
from tickforge.trading.sessions import Session, SessionRule, default_session_rule

SESSION_CLOSED = "session_closed"


class StaleSession(ValueError):
    """An event of a session day older than the symbol's current one."""


@dataclass
class _Day:
    session: Session
    matcher: PaperMatcher
    last_arrival_ms: int
    ended: bool = False

    @property
    def end_ms(self) -> int:
        return max(self.session.close_ms, self.last_arrival_ms)


class SessionVenue:
    def __init__(self, rule: SessionRule | None = None, config: MatchingConfig | None = None) -> None:
        self.rule = rule or default_session_rule()
        self._config = config
        self._days: dict[str, _Day] = {}

    def session(self, symbol: str) -> Session | None:
        """The symbol's current session (None before its first event)."""
        day = self._days.get(symbol)
        return None if day is None else day.session

    def on_quote(self, quote: QuoteLike) -> list[VenueEvent]:
        day, out = self._day(quote.symbol, quote.ts_ms)
        out += self._end_if_over(day, quote.ts_ms)
        return out + day.matcher.on_quote(quote)

    def on_trade(self, trade: TradeLike) -> list[VenueEvent]:
        day, out = self._day(trade.symbol, trade.ts_ms)
        out += self._end_if_over(day, trade.ts_ms)
        return out + day.matcher.on_trade(trade)

    def submit(self, order: Order) -> list[VenueEvent]:
        """The order under its symbol's session at its arrival; late ones are rejected."""
        day, out = self._day(order.symbol, order.arrival_ts_ms)
        if day.ended or order.decision_ts_ms > day.session.close_ms:
            return [*out, OrderRejected(order.client_order_id, order.arrival_ts_ms, SESSION_CLOSED)]
        day.last_arrival_ms = max(day.last_arrival_ms, order.arrival_ts_ms)
        return out + day.matcher.submit(order)

    def advance_to(self, ts_ms: int) -> list[VenueEvent]:
        """Nothing stamped ``<= ts_ms`` is still to come, orders included: the orders arriving by
        then reach their books now (against the book in force at their arrival, as they would at
        the next market event, only without waiting for it), and sessions ending by then end."""
        out: list[VenueEvent] = []
        for day in self._days.values():
            if day.ended:
                continue
            if ts_ms >= day.end_ms:
                out += self._end(day)
            else:
                out += day.matcher.advance_to(ts_ms)
        return out

    def end_all(self) -> list[VenueEvent]:
        """The input is over: every session still open ends (at its own end)."""
        out: list[VenueEvent] = []
        for day in self._days.values():
            out += self._end(day)
        return out

    def _day(self, symbol: str, ts_ms: int) -> tuple[_Day, list[VenueEvent]]:
        session = self.rule.session(symbol, ts_ms)
        day = self._days.get(symbol)
        if day is not None and session.day_end_ms == day.session.day_end_ms:
            return day, []
        if day is not None and session.day_end_ms < day.session.day_end_ms:
            raise StaleSession(f"{symbol} at {ts_ms}: of the {session.day} session, {day.session.day} has begun")
        out = [] if day is None else self._end(day)
        fresh = _Day(session, PaperMatcher(self._config, [symbol]), session.open_ms)
        self._days[symbol] = fresh
        return fresh, out

    def _end_if_over(self, day: _Day, ts_ms: int) -> list[VenueEvent]:
        return self._end(day) if ts_ms >= day.end_ms else []

    @staticmethod
    def _end(day: _Day) -> list[VenueEvent]:
        if day.ended:
            return []
        day.ended = True
        return day.matcher.end_session(day.end_ms)
