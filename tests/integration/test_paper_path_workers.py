"""Orders -> risk -> paper matcher -> fills on the local stack's Kafka, exactly once across SIGKILLs.

The demo day's BAC morning (2013-10-08 09:30-11:00): its NBBO quotes and prints go to ``ticks`` as
column batches; the orders the strategy runner decides on the same stretch's 1 m bars (two picks,
the runner kernel on the offline bars) go to ``orders`` with the runner's markers. The ``risk`` and
``paper-matcher`` workers (``tickforge stream ...``) run on them; after the first half's fills are
committed both are SIGKILLed, the second half is produced with the end markers, and new processes
take over from their checkpoints. The committed ``orders.approved``, ``orders.rejected`` and
``fills`` then hold exactly what the same tasks decide over the same input without Kafka (the
event-time merge makes that one answer whatever the arrival order): each decision and each fill
once. And every fill of a marketable order is at the opposite best that prevailed at its arrival,
for no more than its displayed size.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np
import polars as pl
import pytest

from tests.integration.pipeline import read_topic, stop_worker, wait_until
from tests.unit.kafka_fakes import FakeBroker, FakeMessage
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.contracts import BATCH_ENCODER, Bar, QuoteBatch, TradeBatch
from tickforge.platform.io.files import read_quotes, read_trades
from tickforge.platform.io.kafka import encode_marker, make_producer, marker_headers, topic_name
from tickforge.platform.topics import FILLS, ORDERS, ORDERS_APPROVED, ORDERS_REJECTED, TICKS, partition_for
from tickforge.streaming.matcher_worker import MatcherTask
from tickforge.streaming.merge import InputPort, Junction, MergedTask
from tickforge.streaming.oms_store import order_meta
from tickforge.streaming.order_messages import decode_event, decode_fill, decode_order_message
from tickforge.streaming.risk_worker import RiskTask
from tickforge.streaming.runtime import Output, ProducerClient
from tickforge.streaming.strategy_runner import encode_order
from tickforge.trading.io import DEFAULT_LIMITS, LimitsFile, load_limits, read_picks_file
from tickforge.trading.order_feed import Decided, Entry, RiskRefused
from tickforge.trading.risk import target_quantity
from tickforge.trading.runner import StrategyRunner

pytestmark = pytest.mark.integration

OPEN = 1381239000000  # 2013-10-08 09:30 New York
END = OPEN + 90 * 60_000  # 11:00
PICKS_CSV = """\
symbol,strategy,timeframe,params,bucket,weight
BAC,ema_cross,1m,"{""fast"": 5, ""slow"": 20, ""allow_short"": true}",MED,0.25
BAC,rsi_reversion,1m,"{""period"": 14, ""lower"": 30, ""upper"": 70}",LOW,0.25
"""
BATCH_ROWS = 2_000


def _orders(bars: pl.DataFrame, picks_path: Path) -> list[tuple[int, bytes]]:
    """(decision time, the runner's order message) for the stretch's bars."""
    limits = load_limits()
    runner = StrategyRunner(
        read_picks_file(picks_path), lambda p, price: target_quantity(limits, p.bucket, p.weight, price), 5
    )
    out = []
    for row in bars.to_dicts():
        step = runner.on_bar(
            Bar(timeframe="1m", first_ts=row["window_start"], last_ts=row["window_end"] - 1, **row), False
        )
        out += [(o.order.decision_ts_ms, encode_order(o)) for o in step.orders]
    return out


def _tick_batches(quotes: pl.DataFrame, trades: pl.DataFrame) -> list[tuple[int, bytes]]:
    """(first time, batch) of the quotes and prints in time order (quotes first at the same
    millisecond), cut into batches of one kind at most ``BATCH_ROWS`` long: the partition is in
    event time, as a feed is."""
    events = pl.concat(
        [
            quotes.select("ts_ms", "bid", "ask", "bid_size", "ask_size", pl.lit(0).alias("kind")),
            trades.select(
                "ts_ms",
                pl.col("price").alias("bid"),
                pl.col("size").alias("ask"),
                pl.lit(None, pl.Float64).alias("bid_size"),
                pl.lit(None, pl.Float64).alias("ask_size"),
                pl.lit(1).alias("kind"),
            ),
        ],
        how="vertical_relaxed",
    ).sort("ts_ms", "kind", maintain_order=True)
    run = (pl.col("kind") != pl.col("kind").shift(1)).fill_null(True).cum_sum()
    events = events.with_columns(batch=run * 1_000_000 + pl.int_range(pl.len()).over(run) // BATCH_ROWS)
    out = []
    for (_,), part in events.group_by("batch", maintain_order=True):
        ts = part["ts_ms"].to_numpy()
        if part["kind"][0] == 0:
            batch: QuoteBatch | TradeBatch = QuoteBatch.from_arrays(
                "BAC",
                ts,
                part["bid"].fill_null(np.nan).to_numpy(),
                part["ask"].fill_null(np.nan).to_numpy(),
                part["bid_size"].fill_null(np.nan).to_numpy(),
                part["ask_size"].fill_null(np.nan).to_numpy(),
            )
        else:
            batch = TradeBatch.from_arrays("BAC", ts, part["bid"].to_numpy(), part["ask"].to_numpy())
        out.append((int(ts[0]), BATCH_ENCODER.encode(batch)))
    return out


def _in_memory(task: MergedTask, first: str, second: str, inputs: dict[str, list[bytes]]) -> dict[str, list[dict]]:
    """The task over its two inputs without Kafka (each input, then its end marker)."""
    broker = FakeBroker(1)
    out = Output(cast(ProducerClient, broker.producer()), 0, dead_letter_topic="dead-letter")
    junction = Junction([first, second], task)
    for topic in (first, second):
        port = InputPort(junction, topic, NO_WATERMARK)
        for i, value in enumerate([*inputs[topic]]):
            port.process(FakeMessage(topic, 0, i, None, value, None, 0), out)
            port.close(out)
    for topic, port in junction.ports.items():
        port.process(FakeMessage(topic, 0, 10**9, None, encode_marker(END + 86_400_000), marker_headers(), 0), out)
    return {
        t: [msgspec.json.decode(m.value() or b"") for m in broker.records(t) if not m.headers()]
        for t in (ORDERS_APPROVED, ORDERS_REJECTED, FILLS, "orders.events", "dead-letter")
    }


def _morning(settings, samples) -> tuple[pl.DataFrame, list[tuple[int, bytes]], pl.DataFrame]:
    """The BAC morning: its 1 m bars, its tick batches and its quotes."""
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    window = pl.col("ts_ms").is_between(OPEN, END, closed="left") & (pl.col("symbol") == "BAC")
    morning = dataclasses.replace(trades, data=trades.data.filter(window))
    bars = build_bars(morning, ["1m"], lateness_ms=settings.streaming.allowed_lateness_ms).bars["1m"]
    return bars, _tick_batches(quotes.filter(window), morning.data), quotes.filter(window)


def _without_kafka(
    orders: list[tuple[int, bytes]], ticks: list[tuple[int, bytes]]
) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """What risk decides over the orders and ticks, and what the matcher does with its approvals."""
    risk = RiskTask(ORDERS, TICKS, ORDERS_APPROVED, ORDERS_REJECTED, LimitsFile(DEFAULT_LIMITS), lambda: None)
    decided = _in_memory(risk, ORDERS, TICKS, {ORDERS: [v for _, v in orders], TICKS: [v for _, v in ticks]})
    matched = _in_memory(
        MatcherTask(ORDERS_APPROVED, TICKS, FILLS, "orders.events"),
        ORDERS_APPROVED,
        TICKS,
        {ORDERS_APPROVED: [msgspec.json.encode(a) for a in decided[ORDERS_APPROVED]], TICKS: [v for _, v in ticks]},
    )
    return decided, matched


def oms_records(
    orders: list[tuple[int, bytes]], decided: dict[str, list[dict]], matched: dict[str, list[dict]]
) -> list[Entry]:
    """The records the OMS store reads (the runner's orders, risk's rejections, the matcher's
    events and fills), decoded as it decodes them, each at its position in its source."""
    entries: list[Entry] = []

    for offset, (_, value) in enumerate(orders):
        message = decode_order_message(value)
        entries.append(Entry(Decided(message.order, order_meta(message)), (0, 0, offset)))
    for offset, raw in enumerate(decided[ORDERS_REJECTED]):
        message = decode_order_message(msgspec.json.encode(raw))
        refused = RiskRefused(message.order, order_meta(message), raw["risk_ts_ms"], raw["rule"])
        entries.append(Entry(refused, (1, 0, offset)))
    for offset, raw in enumerate(matched["orders.events"]):
        entries.append(Entry(decode_event(msgspec.json.encode(raw)), (2, 0, offset)))
    for offset, raw in enumerate(matched[FILLS]):
        entries.append(Entry(decode_fill(msgspec.json.encode(raw)), (3, 0, offset)))
    return entries


def _produce(settings, topic: str, values: list[bytes], marker_ms: int | None) -> None:
    producer = make_producer(settings)
    name = topic_name(settings, topic)
    partition = partition_for("BAC", settings.kafka.partitions)
    for value in values:
        producer.produce(name, value, "BAC", partition=partition)
    if marker_ms is not None:
        for p in range(settings.kafka.partitions):
            producer.produce(name, encode_marker(marker_ms), None, partition=p, headers=marker_headers())
    assert producer.flush(30) == 0


def _start(name: str, log: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tickforge.cli", "stream", name],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )


def _committed(settings, topic: str, expect: int, idle_s: float = 4.0) -> list[dict]:
    values, _ = read_topic(settings, topic, idle_s=idle_s, max_s=240, expect=expect)
    return [msgspec.json.decode(v) for v in values]


def test_orders_risk_fills_exactly_once_across_sigkills(settings, samples, tmp_path):
    bars, ticks, book = _morning(settings, samples)
    picks_path = tmp_path / "picks.csv"
    picks_path.write_text(PICKS_CSV)
    orders = _orders(bars, picks_path)
    assert len(orders) > 10

    decided, matched = _without_kafka(orders, ticks)
    expected_fills = sorted((f["fill_id"], f["price"], f["quantity"]) for f in matched[FILLS])
    assert decided[ORDERS_APPROVED] and expected_fills and not decided["dead-letter"]

    cut = OPEN + 45 * 60_000
    _produce(settings, ORDERS, [v for ts, v in orders if ts < cut], marker_ms=cut)
    _produce(settings, TICKS, [v for ts, v in ticks if ts < cut], marker_ms=None)
    first_fills = sum(1 for f in matched[FILLS] if f["ts_ms"] < cut - 60_000)
    assert first_fills > 0
    log = open(tmp_path / "paper-path.log", "ab")
    workers = [_start("risk", log), _start("paper-matcher", log)]
    try:
        wait_until(
            lambda: len(_committed(settings, FILLS, first_fills, idle_s=0.5)) >= first_fills,
            240,
            interval=1.0,
            what="the first half's fills",
        )
        for worker in workers:
            stop_worker(worker, signal.SIGKILL)
            assert worker.returncode == -signal.SIGKILL
        end = END + 86_400_000
        _produce(settings, ORDERS, [v for ts, v in orders if ts >= cut], marker_ms=end)
        _produce(settings, TICKS, [v for ts, v in ticks if ts >= cut], marker_ms=end)
        workers = [_start("risk", log), _start("paper-matcher", log)]
        approved = _committed(settings, ORDERS_APPROVED, len(decided[ORDERS_APPROVED]))
        rejected = _committed(settings, ORDERS_REJECTED, len(decided[ORDERS_REJECTED]))
        fills = _committed(settings, FILLS, len(expected_fills))
    finally:
        for worker in workers:
            stop_worker(worker)
        log.close()

    def ids(rows: list[dict]) -> list[str]:
        return sorted(r["client_order_id"] for r in rows)

    assert ids(approved) == ids(decided[ORDERS_APPROVED]) and len(set(ids(approved))) == len(approved)
    assert ids(rejected) == ids(decided[ORDERS_REJECTED])
    assert sorted((f["fill_id"], f["price"], f["quantity"]) for f in fills) == expected_fills

    # a taker fill is at the opposite best in force at its time, for no more than its size there
    book = book.with_row_index("seq")
    for f in (f for f in fills if f["liquidity"] == "taker"):
        prevailing = book.filter(pl.col("ts_ms") <= f["ts_ms"]).row(-1, named=True)
        price, size = (
            (prevailing["ask"], prevailing["ask_size"])
            if f["side"] == "buy"
            else (
                prevailing["bid"],
                prevailing["bid_size"],
            )
        )
        assert f["price"] == price and f["quantity"] <= size, (f, prevailing)
