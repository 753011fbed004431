"""A broker stopped mid-replay and started again: the workers ride it out without a person.

The test runs its own Kafka broker (the project's launcher, a private state folder, the test
stack's jar cache), so stopping it disturbs no other test. The bar and timeframe workers keep
running through the outage (retrying, aborting what could not commit, reading it again) and the
bars equal the offline build exactly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.integration.pipeline import assert_bars_equal, bars_frame, read_topic, start_worker, stop_worker
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.io.files import read_trades
from tickforge.platform.io.kafka import apply_topics
from tickforge.platform.settings import Settings
from tickforge.platform.stack.launcher import LocalStack, endpoints_env
from tickforge.platform.topics import DEAD_LETTER, bar_topic
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
TIMEFRAMES = ["1s", "1m", "5m"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def private_kafka(stack_env, tmp_path, monkeypatch):
    """A broker of this test's own, on free ports; yields its stack (down/up it at will)."""
    shared_lib = REPO / ".tickforge" / "test-stack" / "kafka" / "lib"
    stack = LocalStack(state_dir=tmp_path / "kafka-state", kafka_lib_dir=shared_lib if shared_lib.is_dir() else None)
    status = stack.up(["kafka"])
    for key, value in endpoints_env(status).items():
        monkeypatch.setenv(key, value)
    yield stack
    stack.down()


def test_workers_ride_out_a_broker_outage(settings, private_kafka, samples, tmp_path):
    s = Settings()  # the private broker, the test's topic prefix
    apply_topics(s)
    crypto = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    expected = build_bars(crypto, TIMEFRAMES, partitions=s.kafka.partitions)
    workers = [start_worker("bar-worker", log_dir=tmp_path), start_worker("timeframe-worker", log_dir=tmp_path)]
    done = threading.Event()

    def publish() -> None:
        replay(s, crypto, rate=3_000, chunk_rows=2_000)  # ~26 s of paced input
        done.set()

    thread = threading.Thread(target=publish)
    try:
        thread.start()
        time.sleep(8)
        private_kafka.down()  # SIGTERM to the broker, mid-replay
        time.sleep(12)
        private_kafka.up(["kafka"])
        thread.join(180)
        assert done.is_set(), "the replay did not finish after the broker came back"
        for tf in TIMEFRAMES:
            values, _ = read_topic(s, bar_topic(tf), idle_s=3, max_s=240, expect=expected.bars[tf].height)
            assert_bars_equal(bars_frame(values), expected.bars[tf])
        letters, _ = read_topic(s, DEAD_LETTER, idle_s=1, max_s=3, expect=0)
        assert not letters, f"{len(letters)} dead letters, first: {letters[:2]}"
        assert all(w.poll() is None for w in workers), "a worker exited during the outage"
    finally:
        thread.join(60)
        for w in workers:
            stop_worker(w)
