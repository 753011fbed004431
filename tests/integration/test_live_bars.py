"""The live pipeline on the real broker: bars on Kafka and in PostgreSQL equal offline."""

from __future__ import annotations

import signal
import time

import msgspec
import polars as pl
import psycopg
import pytest
from confluent_kafka import Producer

from tests.integration.pipeline import (
    assert_bars_equal,
    bars_frame,
    read_topic,
    start_worker,
    stop_worker,
    wait_until,
)
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.bars.watermark import wall_ms
from tickforge.platform.contracts import DeadLetter
from tickforge.platform.io.files import TickFile, read_quotes, read_trades
from tickforge.platform.io.kafka import topic_name
from tickforge.platform.topics import DEAD_LETTER, TICKS, bar_topic, partition_for
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
TIMEFRAMES = ["1s", "1m", "3m", "5m", "15m"]
DAY = (1381204800000, 1381291200000)  # 2013-10-08 UTC


def _slice(tick_file: TickFile, expr) -> TickFile:
    return TickFile(tick_file.kind, tick_file.source, tick_file.data.filter(expr), tick_file.dead_letters.head(0))


@pytest.fixture(scope="module")
def bac_day(samples):
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz")
    in_day = pl.col("ts_ms").is_between(DAY[0], DAY[1], closed="left")
    # One symbol with quotes plus a second symbol, a few hours, to keep the test short.
    window = in_day & pl.col("ts_ms").is_between(DAY[0] + 13 * 3_600_000, DAY[0] + 15 * 3_600_000)
    return (
        _slice(trades, window & pl.col("symbol").is_in(["BAC", "AIG"])),
        _slice(quotes, window),
    )


@pytest.fixture(scope="module")
def crypto(samples):
    return read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")


def _golden(settings, timeframe: str) -> pl.DataFrame:
    with psycopg.connect(settings.postgres.dsn.get_secret_value()) as conn:
        cur = conn.execute(
            f"SELECT symbol, window_start, window_end, open, high, low, close, volume, notional, vwap, "
            f"trade_count, spread_bps, imbalance FROM {settings.postgres.schema_name}.bars_{timeframe}"
        )
        cols = [d.name for d in cur.description]
        return pl.DataFrame(cur.fetchall(), schema=cols, orient="row", infer_schema_length=None)


def test_live_bars_equal_offline_on_kafka_and_in_postgres(settings, bac_day, crypto, tmp_path):
    trades, quotes = bac_day
    workers = [
        start_worker("bar-worker", log_dir=tmp_path),
        start_worker("timeframe-worker", log_dir=tmp_path),
        start_worker("bar-store", log_dir=tmp_path),
    ]
    try:
        replay(settings, trades, quotes)
        replay(settings, crypto)
        expected_equity = build_bars(trades, TIMEFRAMES, quotes, partitions=settings.kafka.partitions)
        expected_crypto = build_bars(crypto, TIMEFRAMES, partitions=settings.kafka.partitions)
        for tf in TIMEFRAMES:
            expected = pl.concat(
                [expected_equity.bars[tf].select(expected_crypto.bars[tf].columns), expected_crypto.bars[tf]]
            )
            values, markers = read_topic(settings, bar_topic(tf), idle_s=4, expect=expected.height)
            live = bars_frame(values)
            assert markers, f"no watermark markers on {tf}"
            assert_bars_equal(live, expected)
            if tf == "1s":
                spread = expected_equity.bars["1s"].join(live, on=["symbol", "window_start"], suffix="_live")
                assert spread["spread_bps"].null_count() < spread.height
                assert ((spread["spread_bps"] - spread["spread_bps_live"]).abs() > 1e-9).sum() == 0
            wait_until(lambda tf=tf, n=expected.height: _golden(settings, tf).height >= n, 60, what=f"golden {tf} bars")
            assert_bars_equal(_golden(settings, tf), expected)
    finally:
        for w in workers:
            stop_worker(w)


def _committed_ticks(settings) -> int:
    """Sum of the bar worker group's committed offsets on the tick topic (its progress)."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": f"{settings.kafka.topic_prefix}bar-worker"}
    )
    try:
        topic = topic_name(settings, TICKS)
        parts = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        return sum(max(tp.offset, 0) for tp in probe.committed(parts, timeout=10))
    finally:
        probe.close()


def test_bar_worker_killed_mid_stream_emits_each_bar_exactly_once(settings, crypto, tmp_path, monkeypatch):
    import threading

    # This test is about restarts. A replay at 40x that stalls for a moment on two busy cores
    # would look like an idle partition to the workers' wall clock and make the next ticks late
    # (correctly: that is what idleness means live); the end-of-day marker closes the session.
    monkeypatch.setenv("TICKFORGE_STREAMING__IDLE_TIMEOUT_MS", "60000")
    expected = build_bars(crypto, TIMEFRAMES, partitions=settings.kafka.partitions)
    bar_worker = start_worker("bar-worker", log_dir=tmp_path)
    timeframe_worker = start_worker("timeframe-worker", log_dir=tmp_path)
    done = threading.Event()

    def publish():
        # Small paced batches: the kills land mid-stream, with windows open and commits behind.
        replay(settings, crypto, speed=40.0, chunk_rows=300)
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    kills, progress = 0, 0
    try:
        while not done.is_set() and kills < 4:
            # Kill only after the worker has committed more work since its last start.
            wait_until(lambda seen=progress: _committed_ticks(settings) > seen or done.is_set(), 60, 0.2, "progress")
            progress = _committed_ticks(settings)
            time.sleep(0.3)
            bar_worker.send_signal(signal.SIGKILL)
            bar_worker.wait(10)
            kills += 1
            bar_worker = start_worker("bar-worker", log_dir=tmp_path)
        thread.join(120)
        assert kills >= 3, "the replay ended before the worker was killed three times"
        # Offline rejects nothing in this input: neither may the restarted workers.
        letters, _ = read_topic(settings, DEAD_LETTER, idle_s=1, max_s=5, expect=0)
        rejected = [msgspec.json.decode(v, type=DeadLetter) for v in letters]
        assert not rejected, f"{len(rejected)} dead letters, first: {rejected[:3]}"
        for tf in ("1s", "1m"):
            values, _ = read_topic(settings, bar_topic(tf), idle_s=6, expect=expected.bars[tf].height)
            assert_bars_equal(bars_frame(values), expected.bars[tf])
    finally:
        done.wait(120)
        stop_worker(bar_worker)
        stop_worker(timeframe_worker)


def test_bad_late_and_duplicate_ticks_go_to_the_dead_letter(settings, tmp_path):
    topic = topic_name(settings, TICKS)
    partitions = settings.kafka.partitions
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})

    def send(symbol: str, value: bytes) -> None:
        producer.produce(topic, value, symbol, partition=partition_for(symbol, partitions))

    base = _live_base()
    good = [
        _at(base, 1000, b'"symbol": "BTC", "price": 100.0, "size": 1.0, "trade_id": 1'),
        _at(base, 1500, b'"symbol": "BTC", "price": 101.0, "size": 2.0, "trade_id": 2'),
        _at(base, 2700, b'"symbol": "BTC", "price": 102.0, "size": 1.0, "trade_id": 3'),
    ]
    bad = {
        b"\xff\x00not json": "undecodable",
        _at(base, 1600, b'"symbol": "BTC", "price": "abc", "size": 1'): "schema_violation",
        b'{"ts_ms": "yesterday", "symbol": "BTC", "price": 1.0, "size": 1}': "bad_timestamp",
        _at(base, 1600, b'"symbol": "BTC", "price": -5.0, "size": 1.0, "trade_id": 10'): "bad_price",
        _at(base, 1600, b'"symbol": "BTC", "price": 5.0, "size": 0.0, "trade_id": 11'): "bad_size",
        _at(base, 1600, b'"symbol": "", "price": 5.0, "size": 1.0'): "missing_symbol",
        _at(base, 1700, b'"symbol": "BTC", "price": 101.0, "size": 2.0, "trade_id": 2'): "duplicate",
    }
    late = _at(base, 1200, b'"symbol": "BTC", "price": 999.0, "size": 9.0, "trade_id": 4')
    for value in good[:2]:
        send("BTC", value)
    for value in bad:
        send("BTC", value)
    send("BTC", good[2])
    send("BTC", late)  # 1 s window [1000, 2000) closed when 2700 arrived (2000 + 500 <= 2700)
    # [2000, 3000) closes by the idle advance: these are live ticks, stamped now
    producer.flush(10)
    worker = start_worker("bar-worker", "--exit-when-idle", "8", log_dir=tmp_path)
    try:
        values, _ = read_topic(settings, DEAD_LETTER, idle_s=3, expect=len(bad) + 1)
        letters = [msgspec.json.decode(v, type=DeadLetter) for v in values]
        reasons = sorted(letter.reason for letter in letters)
        assert reasons == sorted([*bad.values(), "late"])
        late_letter = next(letter for letter in letters if letter.reason == "late")
        assert late_letter.ts_ms == base + 1200 and late_letter.symbol == "BTC" and "999" in late_letter.payload
        bars, _ = read_topic(settings, bar_topic("1s"), idle_s=3, expect=2)
        frame = bars_frame(bars).sort("window_start")
        assert frame["window_start"].to_list() == [base + 1000, base + 2000]
        first = frame.row(0, named=True)
        assert (first["open"], first["close"], first["volume"], first["trade_count"]) == (100.0, 101.0, 3.0, 2)
    finally:
        assert stop_worker(worker) in (0, -15)


def _live_base() -> int:
    """A whole second just past: tests of the idle advance send live ticks, stamped now (only a
    feed whose event time tracks the clock may advance by the clock)."""
    return wall_ms() // 1_000 * 1_000 - 1_000


def _at(base: int, ms: int, rest: bytes) -> bytes:
    """An edge JSON tick at ``base + ms``; ``rest`` holds its other fields."""
    return b'{"ts_ms": %d, %s}' % (base + ms, rest)


def _trade_sender(settings, symbol: str, price: float, base: int = 0):
    """``send(ts, trade_id, price=...)``: one edge JSON trade of ``symbol`` at ``base + ts``,
    delivered at once."""
    topic = topic_name(settings, TICKS)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    partition = partition_for(symbol, settings.kafka.partitions)

    def send(ts: int, trade_id: int, price: float = price) -> None:
        value = f'{{"ts_ms": {base + ts}, "symbol": "{symbol}", "price": {price}, "size": 1.0, "trade_id": {trade_id}}}'
        producer.produce(topic, value.encode(), symbol, partition=partition)
        producer.flush(10)

    return send


def test_a_repeat_of_a_trade_seen_before_a_restart_is_still_a_duplicate(settings, tmp_path, monkeypatch):
    """The restart replays the input whose trade ids are still within the dedup horizon, not
    only the input of open windows: a repeat after a SIGKILL is a duplicate, as without one."""
    monkeypatch.setenv("TICKFORGE_STREAMING__IDLE_TIMEOUT_MS", "60000")
    send = _trade_sender(settings, "BTC", price=100.0)
    worker = start_worker("bar-worker", log_dir=tmp_path)
    try:
        send(1_000, 1)
        send(5_000, 2)  # closes [1000, 2000)
        send(20_000, 3)  # closes [5000, 6000): only [20000, 21000) is open now
        bars, _ = read_topic(settings, bar_topic("1s"), idle_s=1, expect=2)
        assert sorted(bars_frame(bars)["window_start"].to_list()) == [1_000, 5_000]
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker = start_worker("bar-worker", log_dir=tmp_path)
        send(1_000, 1, price=999.0)  # a redelivery of trade 1, after its window closed
        send(21_500, 4)  # closes [20000, 21000)
        letters, _ = read_topic(settings, DEAD_LETTER, idle_s=2, expect=1)
        reasons = [msgspec.json.decode(v, type=DeadLetter).reason for v in letters]
        assert reasons == ["duplicate"]
        bars, _ = read_topic(settings, bar_topic("1s"), idle_s=2, expect=3)
        frame = bars_frame(bars)
        assert sorted(frame["window_start"].to_list()) == [1_000, 5_000, 20_000]  # each once
        assert frame.filter(pl.col("window_start") == 1_000)["high"].to_list() == [100.0]
    finally:
        stop_worker(worker)


def test_a_restart_after_an_idle_advance_does_not_emit_its_bars_again(settings, tmp_path):
    """The idle advance is not in the input: the checkpoint carries the watermark it reached, so
    the replay after a SIGKILL ends there and the bars it closed are not emitted a second time."""
    base = _live_base()
    send = _trade_sender(settings, "ETH", price=10.0, base=base)
    worker = start_worker("bar-worker", log_dir=tmp_path)
    try:
        send(1_000, 1)
        send(3_000, 2)  # closes [1000, 2000); [3000, 4000) closes only by the idle advance (1.5 s)
        bars, _ = read_topic(settings, bar_topic("1s"), idle_s=1, expect=2)
        assert sorted(bars_frame(bars)["window_start"].to_list()) == [base + 1_000, base + 3_000]
        worker.send_signal(signal.SIGKILL)  # trade ids keep both inputs in the replay span
        worker.wait(10)
        worker = start_worker("bar-worker", log_dir=tmp_path)
        send(3_500, 3)  # late: [3000, 4000) was emitted, as it would be without the restart
        letters, _ = read_topic(settings, DEAD_LETTER, idle_s=1, expect=1)
        assert [msgspec.json.decode(v, type=DeadLetter).reason for v in letters] == ["late"]
        time.sleep(4)  # a second idle advance would re-emit [3000, 4000) if the replay reopened it
        bars, _ = read_topic(settings, bar_topic("1s"), idle_s=2, expect=2)
        assert sorted(bars_frame(bars)["window_start"].to_list()) == [base + 1_000, base + 3_000]
    finally:
        stop_worker(worker)
