"""Strategy-runner worker: closed bars of one timeframe -> orders, exactly once.

A thin loop around :class:`tickforge.trading.runner.StrategyRunner` on the exactly-once runtime,
one task per partition of ``bars.<tf>``: it trades the picks whose symbols hash to that partition,
over the bars of the regular session (09:30-16:00 New York, :func:`regular_session`). A bar ending
at the close is the session's last (the runner decides flat there); a session whose last bar ended
before the close is flattened when the watermark passes the close (leg 2 of that bar's window).

Picks are read at each session start for the session's New York day: from a fixed file, or the
day's ``next_day_picks`` rows in PostgreSQL (what the research assets chose for that day), which
stay as they are once chosen, so a restart's replay trades the same picks.

Orders go to the ``orders`` topic (JSON: the order's fields plus the pick's bucket and weight and
the decision bar's close) inside the runtime's transaction. Each message is needed until its
session's close, so the committed offset stays at the session's first bar: a restart replays the
session's bars silently (their orders were committed), which rebuilds the history exactly, and
``client_order_id`` is derived from the bar window, so nothing is decided twice.

There is no fill feedback yet (that is the matcher's output): a book's exposure is what it ordered.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime

import msgspec
from confluent_kafka import Message

from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.io.kafka import marker_watermark, topic_name
from tickforge.platform.settings import Settings, load_settings
from tickforge.platform.topics import ORDERS, bar_topic, partition_for
from tickforge.research.bars import DAILY, NEW_YORK
from tickforge.streaming.codec import bar_or_dead_letter
from tickforge.streaming.runtime import InputDrivenTask, Output, TransactionalWorker
from tickforge.trading.io import load_limits, read_picks_file
from tickforge.trading.limits import RiskLimits
from tickforge.trading.picks import Pick, parse_picks
from tickforge.trading.risk import target_quantity
from tickforge.trading.runner import RunnerOrder, StrategyRunner
from tickforge.trading.sessions import regular_session

log = logging.getLogger(__name__)

NAME = "strategy-runner"

PicksSource = Callable[[date], Sequence[Pick]]
"""The picks to trade on a New York day."""


def file_picks(path: str) -> PicksSource:
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


def encode_order(intent: RunnerOrder) -> bytes:
    fields = {k: str(v) if hasattr(v, "value") else v for k, v in dataclasses.asdict(intent.order).items()}
    return msgspec.json.encode(
        {
            **fields,
            "bucket": str(intent.pick.bucket),
            "weight": intent.pick.weight,
            "timeframe": intent.pick.timeframe,
            "reference_price": intent.reference_price,
        }
    )


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
    ) -> None:
        self._partitions = settings.kafka.partitions
        self._pinned = settings.kafka.pinned_symbols
        self._partition = partition
        self._timeframe = timeframe
        self._source = picks
        self.picks: list[Pick] = []
        self.limits = limits
        self.latency_ms = latency_ms
        self.source = topic_name(settings, bar_topic(timeframe))
        self.topic = topic_name(settings, ORDERS)
        self._watermark = start_watermark
        self._session: tuple[int, int] | None = None
        self._runner: StrategyRunner | None = None

    @property
    def watermark(self) -> int:
        return self._watermark

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            self._advance(marker, out)
            return NO_WATERMARK
        bar = bar_or_dead_letter(msg, out, self.source)
        if bar is None:
            return NO_WATERMARK
        opens, closes = regular_session(bar.window_start)
        if not opens <= bar.window_start < closes:
            return NO_WATERMARK  # not a regular-session bar: not traded
        if self._session != (opens, closes):
            self._end_session(out)
            # a failing read (the table away) leaves no session open: the next bar tries again
            picks = self._day_picks(datetime.fromtimestamp(opens // 1000, NEW_YORK).date())
            self._session, self.picks = (opens, closes), picks
            self._runner = StrategyRunner(self.picks, self._size, self.latency_ms)
        assert self._runner is not None
        step = self._runner.on_bar(bar, session_last=bar.window_end >= closes)
        for intent in step.orders:
            out.send(self.topic, intent.order.symbol, encode_order(intent))
        self._advance(bar.window_end, out)
        return closes + 1  # the session's bars rebuild the history after a restart

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
        return target_quantity(self.limits, pick.bucket, pick.weight, price)

    def _advance(self, watermark: int, out: Output) -> None:
        self._watermark = max(self._watermark, watermark)
        if self._session is not None and self._watermark >= self._session[1]:
            self._end_session(out)

    def _end_session(self, out: Output) -> None:
        """Flatten what the session's last bar did not (it ended before the close)."""
        if self._runner is None:
            return
        for pick in self.picks:
            for intent in self._runner.end_session(pick.symbol, pick.timeframe).orders:
                out.send(self.topic, intent.order.symbol, encode_order(intent))
        self._runner, self._session = None, None

    def close(self, out: Output) -> None:
        """Orders are sent as they are decided."""


def make_worker(
    settings: Settings,
    picks: PicksSource,
    timeframe: str,
    limits: RiskLimits,
    latency_ms: int = 5,
    instance_id: str = "0",
) -> TransactionalWorker:
    return TransactionalWorker(
        settings,
        f"{NAME}-{timeframe}",
        bar_topic(timeframe),
        lambda partition, wm: StrategyRunnerTask(settings, partition, wm, timeframe, picks, limits, latency_ms),
        instance_id=instance_id,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tickforge.streaming.strategy_runner", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--picks", required=True, help="Picks file (CSV, Parquet, YAML), or 'postgres': the day's next_day_picks"
    )
    parser.add_argument("--timeframe", required=True, help="The bar topic to run on (bars.<tf>)")
    parser.add_argument("--limits", default=None, help="Risk limits YAML (sizing); default: the packaged one")
    parser.add_argument("--latency-ms", type=int, default=5)
    parser.add_argument("--instance", default="0")
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        picks = postgres_picks(settings) if args.picks == "postgres" else file_picks(args.picks)
        limits = load_limits(args.limits)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    logging.basicConfig(level=logging.WARNING)
    make_worker(settings, picks, args.timeframe, limits, args.latency_ms, args.instance).run()


if __name__ == "__main__":
    main()
