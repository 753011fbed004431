"""Scale out on this machine: bar-worker instances over one consumer group on a broker of its own.

    .venv/bin/python bench/bench_scale.py [--kills 3] [--partitions 4]

Runs a private broker (the project's launcher, this checkout's broker configuration) and reports:

- sustained ticks/s of 1 and of 2 bar-worker instances over the same backlog (the equity days and
  the Binance sample replayed flat out first; from the first committed progress to every partition's
  committed offset at its end). On 2 cores the ratio is bounded by the cores, and by the busiest
  partition's share of the ticks (``tickforge topics plan`` shows it);
- the failover stall: an instance SIGKILLed under a paced replay, until the first committed output
  on its partitions, p50 and max over ``--kills``;
- the rebalance time: a second instance started under a backlog, until it holds partitions.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import TopicPartition

from bench.bench_e2e import free_port
from tickforge.platform.data_sets import full_or_sample
from tickforge.platform.io.files import read_trades
from tickforge.platform.io.kafka import (
    apply_topics,
    first_output_after,
    group_assignment,
    make_consumer,
    topic_name,
    topic_offsets,
)
from tickforge.platform.settings import Settings
from tickforge.platform.stack.launcher import LocalStack, endpoints_env
from tickforge.platform.topics import TICKS, bar_topic
from tickforge.streaming.replay import replay

REPO = Path(__file__).resolve().parents[1]
WORKER = "bar-worker"


def start(instance: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tickforge.cli", "stream", WORKER, "--instance-id", instance, "--no-emit-bins"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def fresh_settings(partitions: int, tag: str) -> Settings:
    os.environ["TICKFORGE_KAFKA__TOPIC_PREFIX"] = f"scale{time.time_ns() % 10**9}{tag}."
    os.environ["TICKFORGE_KAFKA__PARTITIONS"] = str(partitions)
    settings = Settings()
    apply_topics(settings)
    return settings


def committed(settings: Settings) -> dict[int, int]:
    # read_uncommitted: the last stable commit at once (read_committed waits for the transaction
    # in flight, and a busy worker always has one).
    probe = make_consumer(settings, f"{settings.kafka.topic_prefix}{WORKER}", **{"isolation.level": "read_uncommitted"})
    try:
        parts = [TopicPartition(topic_name(settings, TICKS), p) for p in range(settings.kafka.partitions)]
        return {tp.partition: tp.offset for tp in probe.committed(parts, timeout=10)}
    finally:
        probe.close()


def ends(settings: Settings) -> dict[int, int]:
    probe = make_consumer(settings, f"{settings.kafka.topic_prefix}probe")
    try:
        return {p: hi for p, (_, hi) in topic_offsets(probe, topic_name(settings, TICKS)).items()}
    finally:
        probe.close()


def throughput(instances: int, partitions: int, trade_files: list) -> dict:
    settings = fresh_settings(partitions, f"t{instances}")
    ticks = 0
    for trades in trade_files:
        replay(settings, trades)
        ticks += trades.data.height
    end = ends(settings)
    procs = [start(str(i)) for i in range(instances)]
    try:
        first = None
        while True:
            now = committed(settings)
            if first is None and any(o > 0 for o in now.values()):
                first = time.monotonic()
            if all(now[p] >= end[p] for p in end):
                break
            time.sleep(0.05)
        seconds = time.monotonic() - (first or time.monotonic())
        shares = {k: sorted(v) for k, v in group_assignment(settings, f"{settings.kafka.topic_prefix}{WORKER}").items()}
    finally:
        for proc in procs:
            stop(proc)
    return {
        "instances": instances,
        "ticks": ticks,
        "seconds": round(seconds, 2),
        "ticks_per_s": round(ticks / seconds) if seconds else None,
        "assignment": shares,
    }


def failovers(kills: int, partitions: int, trades) -> dict:
    settings = fresh_settings(partitions, "f")
    group = f"{settings.kafka.topic_prefix}{WORKER}"
    procs = {i: start(i) for i in ("a", "b")}
    stalls: list[float] = []
    publishing = threading.Thread(target=lambda: replay(settings, trades, rate=3_000, chunk_rows=500), daemon=True)
    try:
        while len([m for m, p in group_assignment(settings, group).items() if p]) < 2:
            time.sleep(0.2)
        publishing.start()
        for k in range(kills):
            victim_id = "ab"[k % 2]
            time.sleep(2.0)  # let the restarted instance settle into its share again
            victim = group_assignment(settings, group).get(f"{group}-{victim_id}", set())
            if not victim or not publishing.is_alive():
                break
            probe = make_consumer(settings, f"{group}-probe")
            try:
                out = topic_name(settings, bar_topic("1s"))
                since = {p: probe.get_watermark_offsets(TopicPartition(out, p), timeout=10)[1] for p in victim}
            finally:
                probe.close()
            procs[victim_id].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            procs[victim_id].wait(10)
            stalls.append(first_output_after(settings, bar_topic("1s"), since, 60) - killed)
            procs[victim_id] = start(victim_id)
    finally:
        for proc in procs.values():
            stop(proc)
    return {
        "kills": len(stalls),
        "stall_s": [round(x, 2) for x in stalls],
        "p50_s": round(statistics.median(stalls), 2) if stalls else None,
        "max_s": round(max(stalls), 2) if stalls else None,
    }


def rebalance(partitions: int, trade_files: list) -> dict:
    settings = fresh_settings(partitions, "r")
    group = f"{settings.kafka.topic_prefix}{WORKER}"
    for trades in trade_files:
        replay(settings, trades, encoding="json")  # one message per tick: a long backlog
    end = ends(settings)
    first = start("a")
    second = None
    try:
        while not any(o > 0 for o in committed(settings).values()):
            time.sleep(0.05)
        second = start("b")
        started = time.monotonic()
        while f"{group}-b" not in group_assignment(settings, group):
            time.sleep(0.02)
        joined = time.monotonic()
        while not group_assignment(settings, group).get(f"{group}-b"):
            time.sleep(0.02)
        assigned = time.monotonic()
        left = sum(end[p] - max(o, 0) for p, o in committed(settings).items())
    finally:
        for proc in (first, second):
            if proc is not None:
                stop(proc)
    return {
        "joined_after_start_s": round(joined - started, 2),
        "assigned_after_joining_s": round(assigned - joined, 2),
        "assigned_after_start_s": round(assigned - started, 2),
        "backlog_messages_left_then": left,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    shared_lib = REPO / ".tickforge" / "test-stack" / "kafka" / "lib"
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as state:
        # Ports of its own: the defaults belong to the shared stacks.
        stack = LocalStack(
            state_dir=Path(state),
            ports={"kafka": free_port(), "kafka_controller": free_port()},
            kafka_lib_dir=shared_lib if shared_lib.is_dir() else None,
        )
        os.environ.update(endpoints_env(stack.up(["kafka"])))
        try:
            equity = read_trades(full_or_sample("us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"))
            crypto = read_trades(
                REPO / "data" / "samples" / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
            )
            one = throughput(1, args.partitions, [equity, crypto])
            two = throughput(2, args.partitions, [equity, crypto])
            result = {
                "partitions": args.partitions,
                "cpus": os.cpu_count(),
                "throughput": [one, two],
                "ratio_2_to_1": round(two["ticks_per_s"] / one["ticks_per_s"], 2),
                "failover": failovers(args.kills, args.partitions, crypto),
                "rebalance_under_backlog": rebalance(args.partitions, [crypto]),
                "duration_s": None,
            }
        finally:
            stack.down()
    result["duration_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
