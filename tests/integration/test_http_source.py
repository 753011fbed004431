"""Pushed NDJSON ticks reach the tick topic (bad lines the dead letter) and become bars."""

from __future__ import annotations

import threading
import urllib.request

import msgspec
import polars as pl
import pytest

from tests.integration.pipeline import assert_bars_equal, bars_frame, read_topic, start_worker, stop_worker
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.contracts import DeadLetter
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.topics import DEAD_LETTER, bar_topic
from tickforge.streaming.http_source import push_file, serve

pytestmark = pytest.mark.integration


def test_pushed_ticks_become_the_same_bars_as_offline(settings, samples, tmp_path):
    trades = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    sample = TickFile("trades", trades.source, trades.data.filter(pl.col("symbol").is_in(["ETHUSD_PERP", "BTCUSD_PERP"])),
                      trades.dead_letters)
    server = serve(settings, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/ticks"
    worker = start_worker("bar-worker", log_dir=tmp_path)
    try:
        totals = push_file(url, sample)
        assert totals == {"accepted": sample.data.height, "rejected": 0}
        bad = urllib.request.Request(url, data=b'{"ts_ms": 1, "symbol": "X", "price": "x", "size": 1}\nnot json\n',
                                     method="POST")
        with urllib.request.urlopen(bad) as response:
            assert msgspec.json.decode(response.read()) == {"accepted": 0, "rejected": 2}
        letters, _ = read_topic(settings, DEAD_LETTER, idle_s=2, expect=2)
        assert sorted(msgspec.json.decode(v, type=DeadLetter).reason for v in letters) == ["schema_violation", "undecodable"]
        expected = build_bars(sample, ["1s"], partitions=settings.kafka.partitions).bars["1s"]
        # No end-of-day marker here: the last bars close through the idle advance.
        values, _ = read_topic(settings, bar_topic("1s"), idle_s=3, expect=expected.height)
        assert_bars_equal(bars_frame(values), expected)
    finally:
        server.shutdown()
        stop_worker(worker)
