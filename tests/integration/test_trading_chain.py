"""Bars -> strategy runner -> risk -> paper matcher -> fills -> OMS tables, all four workers
SIGKILLed at once.

The BAC morning of 2013-10-08 (09:30-11:00): its 1 m bars (the streaming kernel, offline) go to
``bars.1m`` and its NBBO quotes and prints to ``ticks``, the first 45 minutes of each before any
worker starts. ``strategy-runner``, ``risk`` and ``paper-matcher`` run as ``tickforge stream``
runs them, and ``oms-store`` writes what they decide into PostgreSQL; once the first stretch's
fills are committed all four are SIGKILLed together, mid-stream (each may hold an open
transaction or an uncommitted write); the rest is produced with the end markers and new
processes take over from their checkpoints. The committed ``orders``, ``orders.approved``,
``orders.rejected`` and ``fills`` then hold exactly what the runner, risk and matcher kernels
decide over the same bars and ticks without Kafka: each decision once, each fill once. And the
OMS tables hold every order once, with the trail and fills the OMS kernel gives those records.
"""

from __future__ import annotations

import signal

import msgspec
import polars as pl
import psycopg
import pytest

from tests.integration.pipeline import stop_worker, wait_until
from tests.integration.test_paper_path_workers import (
    END,
    OPEN,
    PICKS_CSV,
    _committed,
    _morning,
    _without_kafka,
    oms_records,
)
from tests.integration.test_paper_path_workers import _produce as produce_ticks
from tests.integration.test_paper_path_workers import _start as start_worker
from tests.integration.test_strategy_runner_worker import _produce as produce_bars
from tests.integration.test_strategy_runner_worker import _start as start_runner
from tickforge.platform.contracts import Bar, DeadLetter
from tickforge.platform.io.kafka import make_producer, topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.topics import (
    DEAD_LETTER,
    FILLS,
    ORDER_EVENTS,
    ORDERS,
    ORDERS_APPROVED,
    ORDERS_REJECTED,
    TICKS,
    partition_for,
)
from tickforge.streaming.strategy_runner import encode_order
from tickforge.trading.io import load_limits, read_picks_file
from tickforge.trading.order_feed import OrderFeed
from tickforge.trading.risk import target_quantity
from tickforge.trading.runner import StrategyRunner
from tickforge.trading.store import PAPER_LIVE_ACCOUNT, read_oms

pytestmark = pytest.mark.integration


def runner_orders(bars: pl.DataFrame, picks_path) -> list[tuple[int, bytes]]:
    """(decision time, order message) of the runner kernel over the morning's bars, then the
    flatten the worker sends when the end-of-day marker ends the session after its last bar."""
    limits = load_limits()
    runner = StrategyRunner(
        read_picks_file(picks_path), lambda p, price: target_quantity(limits, p.bucket, p.weight, price), 5
    )
    steps = [
        runner.on_bar(Bar(timeframe="1m", first_ts=row["window_start"], last_ts=row["window_end"] - 1, **row), False)
        for row in bars.to_dicts()
    ]
    steps.append(runner.end_session("BAC", "1m"))
    return [(o.order.decision_ts_ms, encode_order(o)) for step in steps for o in step.orders]


def test_runner_risk_matcher_exactly_once_when_all_are_killed(settings, samples, tmp_path):
    bars, ticks, _ = _morning(settings, samples)
    picks_path = tmp_path / "picks.csv"
    picks_path.write_text(PICKS_CSV)
    orders = runner_orders(bars, picks_path)

    # the same decisions without Kafka: the runner kernel, then risk, then the matcher
    order_values = [v for _, v in orders]
    decided, matched = _without_kafka(orders, ticks)
    expected_fills = sorted((f["fill_id"], f["price"], f["quantity"]) for f in matched[FILLS])
    assert len(orders) > 10 and decided[ORDERS_APPROVED] and expected_fills

    cut = OPEN + 45 * 60_000
    first_fills = sum(1 for f in matched[FILLS] if f["ts_ms"] < cut - 60_000)
    assert 0 < first_fills < len(expected_fills)
    # the bar workers' markers on every strategy timeframe, as a running stack sends them: the
    # runner's watermark is the least over its timeframes, and risk waits for it
    produce_bars(settings, bars.filter(pl.col("window_end") <= cut), marker_ms=cut)
    produce_ticks(settings, TICKS, [v for ts, v in ticks if ts < cut], marker_ms=None)
    log = open(tmp_path / "chain.log", "ab")

    def start_all() -> list:
        return [
            start_runner(str(picks_path), log),
            start_worker("risk", log),
            start_worker("paper-matcher", log),
            start_worker("oms-store", log),
        ]

    workers = start_all()
    try:
        wait_until(
            lambda: len(_committed(settings, FILLS, first_fills, idle_s=0.5)) >= first_fills,
            240,
            interval=1.0,
            what="the first stretch's fills",
        )
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
        for worker in workers:
            assert stop_worker(worker, signal.SIGKILL) == -signal.SIGKILL
        end = END + 86_400_000
        produce_bars(settings, bars.filter(pl.col("window_end") > cut), marker_ms=end)
        produce_ticks(settings, TICKS, [v for ts, v in ticks if ts >= cut], marker_ms=end)
        # a record no one can read, among the venue's events the OMS store reads: a dead letter, the
        # rest flows on
        poison = make_producer(settings)
        poison.produce(
            topic_name(settings, ORDER_EVENTS),
            b"{not json",
            "BAC",
            partition=partition_for("BAC", settings.kafka.partitions),
        )
        assert poison.flush(30) == 0
        workers = start_all()
        sent = _committed(settings, ORDERS, len(orders))
        approved = _committed(settings, ORDERS_APPROVED, len(decided[ORDERS_APPROVED]))
        rejected = _committed(settings, ORDERS_REJECTED, len(decided[ORDERS_REJECTED]))
        fills = _committed(settings, FILLS, len(expected_fills))
        # the OMS kernel over the same records, and the tables once the store has caught up
        feed = OrderFeed()
        assert not feed.apply(oms_records(orders, decided, matched)).waiting
        want = feed.frames(r.order.client_order_id for r in feed.oms.records())
        dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name

        def stored():
            with psycopg.connect(dsn) as conn:
                return read_oms(conn, schema, PAPER_LIVE_ACCOUNT)

        wait_until(
            lambda: stored().transitions.height >= want[1].height, 120, interval=1.0, what="the OMS tables caught up"
        )
        oms = stored()
        letters = [DeadLetter(**d) for d in _committed(settings, DEAD_LETTER, 1, idle_s=1.0)]
    finally:
        for worker in workers:
            stop_worker(worker)
        log.close()

    def ids(rows: list[dict]) -> list[str]:
        return sorted(r["client_order_id"] for r in rows)

    assert ids(sent) == sorted(msgspec.json.decode(v)["client_order_id"] for v in order_values)
    assert len(set(ids(sent))) == len(sent)
    assert ids(approved) == ids(decided[ORDERS_APPROVED]) and len(set(ids(approved))) == len(approved)
    assert ids(rejected) == ids(decided[ORDERS_REJECTED])
    assert sorted((f["fill_id"], f["price"], f["quantity"]) for f in fills) == expected_fills
    keep = {
        "orders": ["client_order_id", "book", "status", "filled_quantity", "average_fill_price"],
        "transitions": ["client_order_id", "seq", "from_status", "to_status", "ts_ms", "reason"],
        "fills": ["fill_id", "client_order_id", "ts_ms", "price", "quantity", "liquidity", "fee"],
    }
    for (name, columns), expected, got in zip(
        keep.items(), want, (oms.orders, oms.transitions, oms.fills), strict=True
    ):
        key = columns[:2] if name == "transitions" else columns[:1]
        assert got.select(columns).sort(key).equals(expected.select(columns).sort(key)), f"oms {name} differ"
    assert oms.orders["book"].null_count() == 0
    assert [(d.reason, d.source) for d in letters] == [(Reason.UNDECODABLE, topic_name(settings, ORDER_EVENTS))]
