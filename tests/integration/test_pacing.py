"""Replays of a real day at any pace give the offline bars: no valid tick turns late.

The replay sends chunks, so a paced replay pauses between them for longer than the idle timeout
(1.5 s in tests): that must never advance a watermark by the wall clock, because the event time of
a replayed day does not track the wall clock. Each case runs the bar and timeframe workers on its
own topics and compares every timeframe bar for bar with ``build_bars`` on the same ticks.
"""

from __future__ import annotations

import random
import time

import polars as pl
import pytest

from tests.integration.pipeline import assert_bars_equal, bars_frame, read_topic, start_worker, stop_worker
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.io.kafka import make_producer
from tickforge.platform.topics import DEAD_LETTER, bar_topic
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
TIMEFRAMES = ["1s", "1m", "3m", "5m", "15m"]
DAY = 1381190400000  # 2013-10-08 00:00 UTC
HOUR = 3_600_000


@pytest.fixture(scope="module")
def equity_day(samples) -> TickFile:
    return read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")


def _between(day: TickFile, start_h: float, end_h: float, rows: int | None = None) -> TickFile:
    data = day.data.filter(
        pl.col("ts_ms").is_between(DAY + int(start_h * HOUR), DAY + int(end_h * HOUR), closed="left")
    )
    return TickFile(day.kind, day.source, data if rows is None else data.head(rows), day.dead_letters.head(0))


def _paused_replay(settings, ticks: TickFile, pauses: int, max_pause_s: float, seed: int) -> None:
    """The day in ``pauses + 1`` parts, a random pause of up to ``max_pause_s`` between them (a
    feed that stalls), then the end-of-day marker."""
    producer = make_producer(settings)
    rng = random.Random(seed)
    size = -(-ticks.data.height // (pauses + 1))
    for first in range(0, ticks.data.height, size):
        part = TickFile(ticks.kind, ticks.source, ticks.data.slice(first, size), ticks.dead_letters)
        last = first + size >= ticks.data.height
        replay(settings, part, producer=producer, end_marker=last)
        if not last:
            time.sleep(rng.uniform(0, max_pause_s))


CASES = {
    # ~40 k ticks at 2,000/s: a 20,000-row chunk every 10 s
    "rate-2000": (lambda day: _between(day, 14, 24, rows=40_000), {"rate": 2_000}),
    # ~60 k ticks at 8,000/s: a chunk every 2.5 s (the reported loss)
    "rate-8000": (lambda day: _between(day, 15, 24, rows=60_000), {"rate": 8_000}),
    # 23 minutes of event time at 100x: a 20,000-row chunk every ~7 s
    "speed-100": (lambda day: _between(day, 14, 24, rows=40_000), {"speed": 100.0}),
    # the sparse pre-market into the open at 1000x: minutes without a trade are long pauses
    "speed-1000": (lambda day: _between(day, 8, 14), {"speed": 1_000.0}),
    "random-pauses": (lambda day: _between(day, 17, 24, rows=30_000), {"pauses": 5, "max_pause_s": 10.0}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_paced_replay_gives_the_offline_bars(settings, equity_day, tmp_path, case):
    cut, pacing = CASES[case]
    ticks = cut(equity_day)
    assert ticks.data.height > 1_000
    expected = build_bars(ticks, TIMEFRAMES, partitions=settings.kafka.partitions)
    workers = [start_worker("bar-worker", log_dir=tmp_path), start_worker("timeframe-worker", log_dir=tmp_path)]
    try:
        if "pauses" in pacing:
            _paused_replay(settings, ticks, pacing["pauses"], pacing["max_pause_s"], seed=len(case))
        else:
            replay(settings, ticks, **pacing)
        for tf in TIMEFRAMES:
            values, _ = read_topic(settings, bar_topic(tf), idle_s=2, expect=expected.bars[tf].height)
            assert_bars_equal(bars_frame(values), expected.bars[tf])
        letters, _ = read_topic(settings, DEAD_LETTER, idle_s=1, max_s=3, expect=0)
        assert not letters, f"{len(letters)} valid ticks dead-lettered, first: {letters[:2]}"
        assert all(w.poll() is None for w in workers), "a worker exited"
    finally:
        for w in workers:
            stop_worker(w)
