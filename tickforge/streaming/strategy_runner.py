"""Strategy-runner worker: closed intraday bars + the day's picks -> orders, exactly once.

A thin loop around :class:`tickforge.trading.runner.StrategyRunner` on the exactly-once runtime.
It reads partition ``p`` of every bar topic it trades (:data:`~tickforge.streaming.registry.
STRATEGY_TIMEFRAMES`, co-partitioned by symbol, so one instance owns partition ``p`` of each), one
task per (timeframe, partition): it trades the picks of that timeframe whose symbols hash to that
partition, over the bars of their class's session (:class:`~tickforge.trading.sessions.
SessionRule`, the risk layer's and the matcher's: US equities 09:30-16:00 New York, crypto and FX
their zone's whole day), each class on its own session clock. A bar ending at the close is the
session's last (the runner decides flat there); a session whose last bar ended before the close
is flattened once no bar of the session can come any more (leg 2 of that bar's window).

Picks are read at each class's session start for the session's day in its zone: from a fixed file, or the
day's ``next_day_picks`` rows in PostgreSQL (what the research assets chose for that day; none yet,
or no table yet: nothing is traded), which stay as they are once chosen, so a restart's replay
trades the same picks.

Orders go to the ``orders`` topic (JSON: the order's fields plus the pick's bucket and weight and
the decision bar's close) inside the runtime's transaction. Each message is needed until its
session is over, so the committed offset stays at the session's first bar: a restart replays the
session's bars silently (their orders were committed), which rebuilds the history exactly, and
``client_order_id`` is derived from the bar window, so nothing is decided twice.

Watermark markers go to ``orders`` too, so an event-time consumer (risk merges orders with ticks)
knows no order decided earlier will come on the partition. The partition's runner tasks share an
:class:`OrdersClock`: the marker is the least decision time any of them may still order at.

There is no fill feedback yet (that is the matcher's output): a book's exposure is what it ordered.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import msgspec
from confluent_kafka import Message

from tickforge.platform.bars.timeframes import bar_timeframes
from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.io.kafka import marker_watermark, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import ORDERS, bar_topic, partition_for
from tickforge.research.bars import DAILY
from tickforge.streaming import metrics
from tickforge.streaming.codec import bar_or_dead_letter
from tickforge.streaming.registry import STRATEGY_TIMEFRAMES
from tickforge.streaming.runtime import InputDrivenTask, Output, PartitionTask, TransactionalWorker
from tickforge.trading.io import load_limits, read_picks_file
from tickforge.trading.limits import RiskLimits
from tickforge.trading.picks import Pick, parse_picks
from tickforge.trading.risk import pick_sizer
from tickforge.trading.runner import RunnerOrder, StrategyRunner
from tickforge.trading.sessions import SessionRule

log = logging.getLogger(__name__)

NAME = "strategy-runner"
POSTGRES = "postgres"  # the picks source naming the research assets' next_day_picks table

PicksSource = Callable[[date], Sequence[Pick]]
"""The picks to trade on a New York day."""


def file_picks(path: str | Path) -> PicksSource:
    picks = read_picks_file(path)  # read (and refused if bad) once, at start
    return lambda day: picks


def postgres_picks(settings: Settings) -> PicksSource:
    """The day's ``next_day_picks`` rows (the research assets' table in the golden bars' schema)."""
    from tickforge.research.store import NEXT_DAY_PICKS, read_table

    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name

    def load(day: date) -> Sequence[Pick]:
        rows = read_table(dsn, schema, NEXT_DAY_PICKS, '"day" = %s', [day])
        return [p for p in parse_picks(rows.iter_rows(named=True)) if p.timeframe != DAILY] if rows.height else []

    return load


def picks_source(settings: Settings, picks: str | Path) -> PicksSource:
    """``postgres`` (the day's research picks) or a picks file; a ValueError for a bad file."""
    return postgres_picks(settings) if str(picks) == POSTGRES else file_picks(picks)


def encode_order(intent: RunnerOrder) -> bytes:
    fields = {k: str(v) if hasattr(v, "value") else v for k, v in dataclasses.asdict(intent.order).items()}
    return msgspec.json.encode(
        {
            **fields,
            "bucket": str(intent.pick.bucket),
            "weight": intent.pick.weight,
            "timeframe": intent.pick.timeframe,
            "book": intent.pick.book,
            "strategy_name": intent.pick.strategy,  # the order's own strategy field names the book
            "reference_price": intent.reference_price,
        }
    )


class OrdersClock:
    """The watermark of one ``orders`` partition, which the runner tasks of every timeframe write:
    the least of their floors (the earliest decision time each may still order at). A task's
    floor alone would be a promise the others may break (a lagging timeframe decides later)."""

    def __init__(self, timeframes: Sequence[str]) -> None:
        self.floors: dict[str, int] = {}
        self.timeframes = frozenset(timeframes)
        self.marked = NO_WATERMARK

    def join(self, timeframe: str) -> None:
        self.floors[timeframe] = NO_WATERMARK

    def set_floor(self, timeframe: str, floor: int) -> None:
        self.floors[timeframe] = floor

    @property
    def watermark(self) -> int:
        """Nothing before the partition's every timeframe has a task (the runtime installs them
        together: range assignment gives partition ``p`` of each bar topic to one instance)."""
        if self.floors.keys() != self.timeframes:
            return NO_WATERMARK
        return min(self.floors.values())


@dataclass
class _ClassSession:
    """One symbol class's trading session on a partition: its picks and their runner."""

    open_ms: int
    close_ms: int
    picks: list[Pick]
    runner: StrategyRunner


class StrategyRunnerTask(InputDrivenTask):
    """The runner's state for one partition of one timeframe's bar topic."""

    def __init__(
        self,
        settings: Settings,
        partition: int,
        start_watermark: int,
        timeframe: str,
        picks: PicksSource,
        limits: RiskLimits,
        latency_ms: int,
        clock: OrdersClock | None = None,
    ) -> None:
        self._partitions = settings.kafka.partitions
        self._pinned = settings.kafka.pinned_symbols
        self._lateness = settings.streaming.allowed_lateness_ms
        self._partition = partition
        self._timeframe = timeframe
        self._source = picks
        self.limits = limits
        self.latency_ms = latency_ms
        self.source = topic_name(settings, bar_topic(timeframe))
        self.topic = topic_name(settings, ORDERS)
        self._watermark = start_watermark
        # What the input has shown: every later bar ends at or after the last one, and after the
        # timeframe worker's marker W only bars with window_end + lateness > W can come. A restart's
        # watermark counts as a marker (a bar's end would promise more).
        self._last_end = NO_WATERMARK
        self._marker = start_watermark
        self._rule = SessionRule.from_settings(settings.signals)
        self._sizer = pick_sizer(limits, self._rule.symbol_classes)
        # The session in force per symbol class: a partition may hold US equities (09:30-16:00
        # New York) and crypto (the UTC day) side by side, each class on its own clock.
        self._sessions: dict[str | None, _ClassSession] = {}
        self.clock = clock if clock is not None else OrdersClock([timeframe])
        self.clock.join(timeframe)
        self._orders_counter = metrics.ORDERS_DECIDED.labels(worker=NAME, timeframe=timeframe)

    @property
    def watermark(self) -> int:
        return self._watermark

    @property
    def floor(self) -> int:
        """The earliest decision time this task may still order at: a bar's orders are decided at
        its window_end; a session-end flatten at the last bar of a book still exposed."""
        if self._last_end <= NO_WATERMARK and self._marker <= NO_WATERMARK:
            return NO_WATERMARK
        floor = max(self._last_end, self._marker - self._lateness + 1)
        pending = [f for s in self._sessions.values() if (f := s.runner.session_end_floor()) is not None]
        return min([floor, *pending])

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            self._marker = max(self._marker, marker)
            self._advance(marker, out)
            return NO_WATERMARK
        bar = bar_or_dead_letter(msg, out, self.source)
        if bar is None:
            return NO_WATERMARK
        self._last_end = max(self._last_end, bar.window_end)
        kind = self._rule.symbol_classes.of(bar.symbol)
        session = self._rule.session(bar.symbol, bar.window_start)
        opens, closes = session.open_ms, session.close_ms
        if not opens <= bar.window_start < closes:
            self._advance(bar.window_end, out)
            return NO_WATERMARK  # not a bar of its class's session: not traded
        current = self._sessions.get(kind)
        if current is None or (current.open_ms, current.close_ms) != (opens, closes):
            self._end_session(kind, out)
            # a failing read (the table away) leaves no session open: the next bar tries again
            picks = [p for p in self._day_picks(date.fromisoformat(session.day)) if self._class_of(p) == kind]
            current = self._sessions[kind] = _ClassSession(
                opens, closes, picks, StrategyRunner(picks, self._size, self.latency_ms)
            )
        step = current.runner.on_bar(bar, session_last=bar.window_end >= closes)
        self._send(step.orders, out)
        self._advance(bar.window_end, out)
        # The session's bars rebuild the history after a restart, until the session is over: the
        # watermark a lateness past the close (a later bar's end is past that too, see _advance).
        return closes + self._lateness

    def _class_of(self, pick: Pick) -> str | None:
        return self._rule.symbol_classes.of(pick.symbol)

    def _day_picks(self, day: date) -> list[Pick]:
        try:
            picks = self._source(day)
        except ValueError as exc:  # picks that do not validate: nothing is traded that day
            log.error("picks refused, the session is not traded", extra={"day": str(day), "error": str(exc)})
            return []
        return [
            p
            for p in picks
            if p.timeframe == self._timeframe
            and partition_for(p.symbol, self._partitions, self._pinned) == self._partition
        ]

    def _size(self, pick: Pick, price: float) -> float:
        return self._sizer(pick, price)

    def _send(self, orders: Sequence[RunnerOrder], out: Output) -> None:
        for intent in orders:
            out.send(self.topic, intent.order.symbol, encode_order(intent))
        if orders and not out.replaying:
            self._orders_counter.inc(len(orders))

    def _advance(self, watermark: int, out: Output) -> None:
        self._watermark = max(self._watermark, watermark)
        # A session is over once none of its bars can come: a bar after its close was seen, or
        # the marker is a lateness past the close (its last bars are out: they close by then).
        seen = max(self._last_end - 1, self._marker - self._lateness)
        for kind in [k for k, s in self._sessions.items() if seen >= s.close_ms]:
            self._end_session(kind, out)

    def _end_session(self, kind: str | None, out: Output) -> None:
        """Flatten what the class's session's last bar did not (it ended before the close)."""
        session = self._sessions.pop(kind, None)
        if session is None:
            return
        for pick in session.picks:
            self._send(session.runner.end_session(pick.symbol, pick.timeframe).orders, out)

    def close(self, out: Output) -> None:
        """Orders are sent as they are decided; the partition's watermark follows as a marker
        whenever it advances (sent again after a replay, where it was dropped)."""
        self.clock.set_floor(self._timeframe, self.floor)
        watermark = self.clock.watermark
        if watermark > self.clock.marked:
            out.marker(self.topic, watermark)
            if not out.replaying:
                self.clock.marked = watermark


def runner_tasks(
    settings: Settings,
    timeframes: Sequence[str],
    picks: PicksSource,
    limits: RiskLimits,
    latency_ms: int,
) -> Callable[[str, int, int], PartitionTask]:
    """The runtime's task factory, ``(bar topic, partition, start watermark)`` -> that timeframe's
    task, the tasks of one partition sharing its :class:`OrdersClock`. A task for a timeframe the
    partition's clock has already (the runtime starting over from its checkpoints) begins a new
    clock, as every task of the partition is made again."""
    by_topic = {topic_name(settings, bar_topic(tf)): tf for tf in timeframes}
    clocks: dict[int, OrdersClock] = {}

    def task(topic: str, partition: int, start_watermark: int) -> PartitionTask:
        timeframe = by_topic[topic]
        clock = clocks.get(partition)
        if clock is None or timeframe in clock.floors:
            clock = clocks[partition] = OrdersClock(timeframes)
        return StrategyRunnerTask(settings, partition, start_watermark, timeframe, picks, limits, latency_ms, clock)

    return task


def make_worker(
    settings: Settings,
    instance_id: str = "0",
    picks: str | Path = POSTGRES,
    limits: str | Path | None = None,
    latency_ms: int = 5,
    timeframes: Sequence[str] | None = None,
) -> TransactionalWorker:
    """The runner over the bar topics of ``timeframes`` (default: the registry's strategy
    timeframes the deployment builds bars of), trading ``picks`` (a file, or ``postgres``: each
    day's ``next_day_picks``) sized by the ``limits`` YAML (the packaged one by default)."""
    if timeframes is None:
        built = bar_timeframes(settings.streaming.timeframes)
        timeframes = [tf for tf in STRATEGY_TIMEFRAMES if tf in built]
    if not timeframes:
        raise ValueError(f"none of the strategy timeframes {list(STRATEGY_TIMEFRAMES)} has bars here")
    source, sizing = picks_source(settings, picks), load_limits(limits)
    for tf in timeframes:
        metrics.ORDERS_DECIDED.labels(worker=NAME, timeframe=tf)  # 0 until the first order, not absent
    factory = runner_tasks(settings, timeframes, source, sizing, latency_ms)
    topics = [bar_topic(tf) for tf in timeframes]
    if len(topics) == 1:
        only = topic_name(settings, topics[0])
        return TransactionalWorker(
            settings, NAME, topics[0], lambda partition, wm: factory(only, partition, wm), instance_id=instance_id
        )
    return TransactionalWorker(settings, NAME, topics, factory, instance_id=instance_id)
