"""Poison messages on the real broker: the bar worker stays up, each one is a dead letter with its
reason, and the real trades around them give exactly the offline bars."""

from __future__ import annotations

import random

import msgspec
import numpy as np
import polars as pl
import pytest

from tests.integration.pipeline import assert_bars_equal, bars_frame, read_topic, start_worker, stop_worker
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.contracts import BATCH_ENCODER, JSON_ENCODER, DeadLetter, Trade, TradeBatch
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.io.kafka import make_producer, marker_headers, topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.topics import DEAD_LETTER, TICKS, bar_topic, partition_for
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration


def _batch(frame: pl.DataFrame) -> TradeBatch:
    names = frame["symbol"].unique(maintain_order=True).to_list()
    index = frame["symbol"].replace_strict(names, list(range(len(names))), return_dtype=pl.Int32).to_numpy()
    return TradeBatch.from_rows(
        names, index, frame["ts_ms"].to_numpy(), frame["price"].to_numpy(), frame["size"].to_numpy()
    )


def test_poison_messages_never_stop_the_bar_worker(settings, samples, tmp_path):
    crypto = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    half = crypto.data.height // 2
    first = TickFile(crypto.kind, crypto.source, crypto.data.head(half), crypto.dead_letters)
    second = TickFile(crypto.kind, crypto.source, crypto.data.slice(half), crypto.dead_letters.head(0))
    symbol = "BTCUSDT-SPOT"
    sample = crypto.data.filter(pl.col("symbol") == symbol).slice(half // 3, 20)
    sound = BATCH_ENCODER.encode(_batch(sample))
    rng = random.Random(5)
    poison: list[tuple[bytes, list | None, str]] = [
        (
            BATCH_ENCODER.encode(msgspec.structs.replace(_batch(sample), ts_ms=b"\x01" * 7)),
            None,
            Reason.MALFORMED_BATCH,
        ),
        (
            BATCH_ENCODER.encode(msgspec.structs.replace(_batch(sample), price=_batch(sample.head(5)).price)),
            None,
            Reason.MALFORMED_BATCH,
        ),
        (
            BATCH_ENCODER.encode(
                msgspec.structs.replace(
                    _batch(sample), symbols=[symbol, "X"], symbol_idx=np.full(20, 7, np.int32).tobytes()
                )
            ),
            None,
            Reason.MALFORMED_BATCH,
        ),
        (b"not json at all", marker_headers(), Reason.UNDECODABLE),
        (
            JSON_ENCODER.encode(Trade(ts_ms=int(sample["ts_ms"][0]), symbol="Y" * 900_000, price=1.0, size=1.0)),
            None,
            Reason.BAD_SYMBOL,
        ),
        (
            JSON_ENCODER.encode(Trade(ts_ms=1_900_000_000_000, symbol=symbol, price=60_000.0, size=1.0)),
            None,
            Reason.FUTURE_TIMESTAMP,
        ),
        *((sound[: rng.randrange(1, len(sound))], None, Reason.UNDECODABLE) for _ in range(3)),
        *(
            (bytes(rng.randrange(256) for _ in range(rng.randrange(1, 500))), None, Reason.UNDECODABLE)
            for _ in range(3)
        ),
    ]
    worker = start_worker("bar-worker", log_dir=tmp_path)
    try:
        producer = make_producer(settings)
        replay(settings, first, producer=producer, end_marker=False)
        topic = topic_name(settings, TICKS)
        partition = partition_for(symbol, settings.kafka.partitions)
        for value, headers, _ in poison:
            producer.produce(topic, value, symbol, partition=partition, headers=headers)
        producer.flush(30)
        replay(settings, second, producer=producer)
        expected = build_bars(crypto, ["1s"], partitions=settings.kafka.partitions).bars["1s"]
        values, _ = read_topic(settings, bar_topic("1s"), idle_s=3, expect=expected.height)
        assert_bars_equal(bars_frame(values), expected)
        letters, _ = read_topic(settings, DEAD_LETTER, idle_s=2, expect=len(poison))
        got = [msgspec.json.decode(v, type=DeadLetter) for v in letters]
        assert sorted(letter.reason for letter in got) == sorted(reason for _, _, reason in poison)
        assert all(len(v) < 10_000 for v in letters), "a dead letter carries an unbounded payload"
        assert worker.poll() is None, "the worker exited"
    finally:
        stop_worker(worker)
