"""The strategy-runner worker on the local stack's Kafka, across a SIGKILL.

The demo day's BAC regular-session 1m bars (2013-10-08, built by the streaming kernel offline)
go to ``bars.1m`` in two halves. The worker (``tickforge stream strategy-runner``, on every
strategy timeframe's bar topic) runs two intraday picks; after the first half's orders are
committed it is SIGKILLed, the second half is produced with the end-of-day marker on every bar
topic (as the timeframe worker sends it), and a new worker process takes over from the committed
checkpoint (replaying the session's bars silently). The committed ``orders`` topic then holds
exactly the orders the offline runner decides on the same bars with the research engine's session
flags: each once, same ids, sides, quantities and decision times, and the watermark follows them
as markers: none below an order sent after it. The picks come from a file, or from the day's
``next_day_picks`` rows in PostgreSQL (read at session start).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import date

import msgspec
import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from tests.integration.pipeline import read_topic, stop_worker, wait_until
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.contracts import Bar
from tickforge.platform.io.files import read_trades
from tickforge.platform.io.kafka import encode_marker, make_producer, marker_headers, marker_watermark, topic_name
from tickforge.platform.topics import ORDERS, bar_topic, partition_for
from tickforge.research.bars import split_bars
from tickforge.streaming.registry import STRATEGY_TIMEFRAMES
from tickforge.trading.io import load_limits, read_picks_file
from tickforge.trading.risk import target_quantity
from tickforge.trading.runner import StrategyRunner
from tickforge.trading.sessions import regular_hours

pytestmark = pytest.mark.integration

PICKS_CSV = """\
symbol,strategy,timeframe,params,bucket,weight
BAC,ema_cross,1m,"{""fast"": 5, ""slow"": 20, ""allow_short"": true}",MED,0.25
BAC,rsi_reversion,1m,"{""period"": 14, ""lower"": 30, ""upper"": 70}",LOW,0.25
"""
KEYS = ("client_order_id", "symbol", "side", "quantity", "decision_ts_ms", "arrival_ts_ms")


def _expected(bars: pl.DataFrame, picks, limits) -> list[tuple]:
    runner = StrategyRunner(picks, lambda p, price: target_quantity(limits, p.bucket, p.weight, price), 5)
    series = split_bars(bars, "1m")[0][0]
    out = []
    for i, row in enumerate(bars.to_dicts()):
        step = runner.on_bar(
            Bar(timeframe="1m", first_ts=row["window_start"], last_ts=row["window_end"] - 1, **row),
            bool(series.session_last[i]),
        )
        out += [tuple(getattr(o.order, k) if k != "side" else str(o.order.side) for k in KEYS) for o in step.orders]
    return out


def _produce(settings, frame: pl.DataFrame, marker_ms: int | None = None) -> None:
    producer = make_producer(settings)
    topic = topic_name(settings, bar_topic("1m"))
    for row in frame.to_dicts():
        bar = Bar(timeframe="1m", first_ts=row["window_start"], last_ts=row["window_end"] - 1, **row)
        producer.produce(
            topic, msgspec.json.encode(bar), bar.symbol, partition=partition_for(bar.symbol, settings.kafka.partitions)
        )
    if marker_ms is not None:
        for tf in STRATEGY_TIMEFRAMES:
            for p in range(settings.kafka.partitions):
                producer.produce(
                    topic_name(settings, bar_topic(tf)),
                    encode_marker(marker_ms),
                    None,
                    partition=p,
                    headers=marker_headers(),
                )
    assert producer.flush(30) == 0


def _start(picks: str, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tickforge.cli", "stream", "strategy-runner", "--picks", picks],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )


def _orders(settings, expect: int, idle_s: float = 4.0) -> list[tuple]:
    values, _ = read_topic(settings, ORDERS, idle_s=idle_s, max_s=120, expect=expect)
    return [tuple(msgspec.json.decode(v)[k] for k in KEYS) for v in values]


def _partition_log(settings, symbol: str) -> list[tuple[str, int]]:
    """The committed ``orders`` partition of ``symbol`` in offset order: ("order", its decision
    time) or ("marker", its watermark)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"reader-{time.time_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partition = partition_for(symbol, settings.kafka.partitions)
    consumer.assign([TopicPartition(topic_name(settings, ORDERS), partition, OFFSET_BEGINNING)])
    out: list[tuple[str, int]] = []
    try:
        while True:
            msg = consumer.poll(10)
            assert msg is not None, "the orders partition did not reach its end"
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                return out
            wm = marker_watermark(msg)
            out.append(("order", msgspec.json.decode(msg.value())["decision_ts_ms"]) if wm is None else ("marker", wm))
    finally:
        consumer.close()


def _store_picks(settings, picks_path) -> None:
    """The picks as the day's next_day_picks rows, where the research assets write them."""
    from tickforge.defs.research.store import replace_rows
    from tickforge.defs.resources import resources_for
    from tickforge.research.scoring import PICK_SCHEMA
    from tickforge.research.store import NEXT_DAY_PICKS

    day = date(2013, 10, 8)
    rows = pl.read_csv(picks_path, infer_schema=False).with_columns(
        day=pl.lit(day), weight=pl.col("weight").cast(pl.Float64)
    )
    rows = rows.with_columns(pl.lit(None).alias(c) for c in PICK_SCHEMA if c not in rows.columns)
    replace_rows(resources_for(settings, env_secrets=False)["postgres"], NEXT_DAY_PICKS, rows, '"day" = %s', [day])


@pytest.mark.parametrize("source", ["file", "postgres"])
def test_orders_exactly_once_across_a_sigkill(settings, samples, tmp_path, source):
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    regular = dataclasses.replace(trades, data=regular_hours(trades.data.filter(pl.col("symbol") == "BAC")))
    bars = build_bars(regular, ["1m"], lateness_ms=settings.streaming.allowed_lateness_ms).bars["1m"]
    picks_path = tmp_path / "picks.csv"
    picks_path.write_text(PICKS_CSV)
    expected = _expected(bars, read_picks_file(picks_path), load_limits())
    picks = str(picks_path)
    if source == "postgres":
        _store_picks(settings, picks_path)
        picks = "postgres"
    assert len(expected) > 20 and len({e[0] for e in expected}) == len(expected)

    half = bars.height // 2
    cut = bars["window_end"][half - 1]
    first_half = [e for e in expected if e[4] <= cut]
    assert 5 < len(first_half) < len(expected)
    _produce(settings, bars.head(half))
    log = open(tmp_path / "strategy-runner.log", "ab")
    worker = _start(picks, log)
    try:
        wait_until(
            lambda: len(_orders(settings, len(first_half), idle_s=0.5)) >= len(first_half),
            120,
            interval=1.0,
            what="the first half's orders",
        )
        stop_worker(worker, signal.SIGKILL)
        assert worker.returncode == -signal.SIGKILL
        _produce(settings, bars.tail(bars.height - half), marker_ms=int(bars["window_end"].max()) + 60_000)
        worker = _start(picks, log)
        got = _orders(settings, len(expected))
    finally:
        stop_worker(worker)
        log.close()
    assert len(got) == len(expected), (len(got), len(expected))
    assert got == expected
    # The watermark as markers among the orders: never past an order that follows it, and at the
    # end of the day past every order (the end marker less the lateness its bars may still take).
    entries = _partition_log(settings, "BAC")
    marks = [wm for kind, wm in entries if kind == "marker"]
    assert marks and marks == sorted(marks)
    seen = -1
    for kind, ts in entries:
        if kind == "marker":
            seen = ts
        else:
            assert ts >= seen, (ts, seen)
    end_ms = int(bars["window_end"].max()) + 60_000
    assert marks[-1] == end_ms - settings.streaming.allowed_lateness_ms + 1 > max(e[4] for e in expected)
