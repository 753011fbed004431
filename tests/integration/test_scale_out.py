"""Several instances of a worker on the real broker: a share each, takeover in seconds, exact bars.

A broker of the module's own (the project's launcher, the test stack's jar cache) runs with the
stack's configuration as this checkout renders it (short group sessions, timed-out transactions
aborted within half a second), and killing workers on it disturbs no other test. The input is real:
a trading hour of the equity demo day (SPY, BAC, AIG) and the Binance sample (six symbols), nine
symbols on four partitions (CRC32: partition 0 carries four of them).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.pipeline import assert_bars_equal, bars_frame, read_topic, stop_worker, wait_until
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.io.kafka import apply_topics, client_config, first_output_after, group_assignment, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.stack.launcher import LocalStack, endpoints_env
from tickforge.platform.topics import TICKS, bar_topic
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
TIMEFRAMES = ["1s", "1m", "3m", "5m", "15m"]
REPO = Path(__file__).resolve().parents[2]
DAY = 1381204800000  # 2013-10-08 UTC
# Bounds that tell seconds from the tens of seconds before (session timeout, then the dead
# member's transaction timing out); bench/bench_scale.py measures the figures (target: 5 s) on a
# machine of its own. The new instance's wait is counted from its joining the group: a Python
# process starting on two busy cores takes seconds by itself.
FAILOVER_BOUND_S = 8.0
REBALANCE_BOUND_S = 5.0


@pytest.fixture(scope="module")
def broker_env(stack_env, tmp_path_factory):
    shared_lib = REPO / ".tickforge" / "test-stack" / "kafka" / "lib"
    # Ports of its own: the defaults belong to the shared stacks (taken or not at this moment).
    stack = LocalStack(
        state_dir=tmp_path_factory.mktemp("scale-kafka"),
        ports={"kafka": _free_port(), "kafka_controller": _free_port()},
        kafka_lib_dir=shared_lib if shared_lib.is_dir() else None,
    )
    yield endpoints_env(stack.up(["kafka"]))
    stack.down()


@pytest.fixture()
def scale_settings(settings, broker_env, monkeypatch) -> Settings:
    """The test's topic prefix on the module's broker (ticks, then workers as subprocesses)."""
    for key, value in broker_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TICKFORGE_STREAMING__IDLE_TIMEOUT_MS", "60000")  # paced replays stall on 2 cores
    s = Settings()
    apply_topics(s)
    return s


@pytest.fixture(scope="module")
def equity_hour(samples) -> TickFile:
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    hour = pl.col("ts_ms").is_between(DAY + 14 * 3_600_000, DAY + 15 * 3_600_000, closed="left")
    return TickFile(trades.kind, trades.source, trades.data.filter(hour), trades.dead_letters.head(0))


@pytest.fixture(scope="module")
def crypto(samples) -> TickFile:
    return read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(command: str, instance: str, log_dir: Path) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{command}-{instance}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "tickforge.cli", "stream", command, "--instance-id", instance],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )


def _assignment(settings: Settings, worker: str) -> dict[str, set[int]]:
    """Instance id -> its partitions, from the broker."""
    group = f"{settings.kafka.topic_prefix}{worker}"
    return {member.removeprefix(f"{group}-"): parts for member, parts in group_assignment(settings, group).items()}


def _output_ends(settings: Settings, topic: str) -> dict[int, int]:
    """Per partition, the last stable offset of an output topic (committed transactions only)."""
    probe = Consumer(
        {**client_config(settings), "group.id": f"probe-{time.time_ns()}", "isolation.level": "read_committed"}
    )
    try:
        name = topic_name(settings, topic)
        return {
            p: probe.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in range(settings.kafka.partitions)
        }
    finally:
        probe.close()


def _committed(settings: Settings, worker: str) -> dict[int, int]:
    # read_uncommitted: the last stable commit at once (read_committed waits for the transaction
    # in flight, and a busy worker always has one).
    probe = Consumer(
        {
            **client_config(settings),
            "group.id": f"{settings.kafka.topic_prefix}{worker}",
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        parts = [TopicPartition(topic_name(settings, TICKS), p) for p in range(settings.kafka.partitions)]
        return {tp.partition: tp.offset for tp in probe.committed(parts, timeout=10)}
    finally:
        probe.close()


def _expected(equity: TickFile, crypto: TickFile, partitions: int) -> dict[str, pl.DataFrame]:
    a = build_bars(equity, TIMEFRAMES, partitions=partitions)
    b = build_bars(crypto, TIMEFRAMES, partitions=partitions)
    return {tf: pl.concat([a.bars[tf].select(b.bars[tf].columns), b.bars[tf]]) for tf in TIMEFRAMES}


def _assert_exact(settings: Settings, expected: dict[str, pl.DataFrame]) -> None:
    for tf in TIMEFRAMES:
        values, _ = read_topic(settings, bar_topic(tf), idle_s=4, expect=expected[tf].height)
        assert_bars_equal(bars_frame(values), expected[tf])  # no key twice, every bar equal


def _in_background(target) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run() -> None:
        try:
            target()
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_two_instances_share_the_partitions_and_take_over_a_killed_one_in_seconds(
    scale_settings, equity_hour, crypto, tmp_path
):
    s = scale_settings
    expected = _expected(equity_hour, crypto, s.kafka.partitions)
    procs = {(w, i): _start(w, i, tmp_path) for w in ("bar-worker", "timeframe-worker") for i in ("a", "b")}

    def publish() -> None:  # ~17 s of paced input: the kill lands mid-stream
        replay(s, equity_hour, rate=25_000, chunk_rows=1_000)
        replay(s, crypto, rate=6_000, chunk_rows=1_000)

    try:
        wait_until(lambda: all(_assignment(s, w).get(i) for w, i in procs), 30, 0.3, "every instance assigned")
        for worker in ("bar-worker", "timeframe-worker"):
            shares = _assignment(s, worker)
            assert sorted(len(p) for p in shares.values()) == [2, 2], f"{worker}: {shares}"
        thread, done = _in_background(publish)
        # Each instance processes its share: every partition's committed offset moves (from the
        # Binance part on, every partition has input).
        wait_until(lambda: all(o > 0 for o in _committed(s, "bar-worker").values()), 60, 0.2, "every partition")
        victim = _assignment(s, "bar-worker")["b"]
        procs["bar-worker", "b"].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        procs["bar-worker", "b"].wait(10)
        time.sleep(0.5)  # a commit the victim had sent may still complete: not a successor's output
        since = _output_ends(s, bar_topic("1s"))
        stall = first_output_after(s, bar_topic("1s"), {p: since[p] for p in victim}, 30) - killed_at
        print(f"failover stall {stall:.2f}s (partitions {sorted(victim)})")
        assert not done.is_set(), "the replay ended before the takeover could be measured"
        assert stall < FAILOVER_BOUND_S, f"output of partitions {victim} stalled {stall:.1f}s after the kill"
        assert _assignment(s, "bar-worker")["a"] == {0, 1, 2, 3}
        procs["bar-worker", "b"] = _start("bar-worker", "b", tmp_path)  # restarted: a share again
        wait_until(
            lambda: len(_assignment(s, "bar-worker").get("b", ())) == 2, 15, 0.2, "the restarted instance's share"
        )
        thread.join(180)
        _assert_exact(s, expected)
    finally:
        for proc in procs.values():
            stop_worker(proc)


def test_an_instance_started_under_a_backlog_gets_partitions_at_once(scale_settings, crypto, tmp_path):
    s = scale_settings
    # JSON ticks, one message per tick: a backlog that keeps one instance busy for seconds.
    crypto = TickFile(crypto.kind, crypto.source, crypto.data.head(30_000), crypto.dead_letters.head(0))
    replay(s, crypto, encoding="json")
    expected = build_bars(crypto, TIMEFRAMES, partitions=s.kafka.partitions).bars
    first = {w: _start(w, "a", tmp_path) for w in ("bar-worker", "timeframe-worker")}
    second: dict[str, subprocess.Popen] = {}
    try:
        wait_until(lambda: _assignment(s, "bar-worker").get("a") == {0, 1, 2, 3}, 30, 0.2, "the first instance")
        wait_until(lambda: sum(max(o, 0) for o in _committed(s, "bar-worker").values()) > 0, 30, 0.2, "progress")
        second = {w: _start(w, "b", tmp_path) for w in ("bar-worker", "timeframe-worker")}
        wait_until(lambda: "b" in _assignment(s, "bar-worker"), 30, 0.05, "the new instance joining")
        joined = time.monotonic()
        wait_until(lambda: len(_assignment(s, "bar-worker").get("b", ())) == 2, 20, 0.05, "the new instance's share")
        took = time.monotonic() - joined
        print(f"new instance assigned {took:.2f}s after joining the group")
        ends = {p: hi for p, (_, hi) in _tick_offsets(s).items()}
        behind = {p for p, offset in _committed(s, "bar-worker").items() if offset < ends[p]}
        assert behind, "the backlog was gone before the new instance joined: nothing measured"
        assert took < REBALANCE_BOUND_S, f"the new instance waited {took:.1f}s for its partitions"
        _assert_exact(s, expected)
    finally:
        for proc in [*first.values(), *second.values()]:
            stop_worker(proc)


def _tick_offsets(settings: Settings) -> dict[int, tuple[int, int]]:
    probe = Consumer({**client_config(settings), "group.id": f"probe-{time.time_ns()}"})
    try:
        name = topic_name(settings, TICKS)
        return {
            p: probe.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            for p in range(settings.kafka.partitions)
        }
    finally:
        probe.close()
