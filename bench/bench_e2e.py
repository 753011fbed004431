"""End to end through the real broker on this machine: replay -> Kafka -> bar worker -> 1 s bars.

    .venv/bin/python bench/bench_e2e.py [--duration 600] [--partitions 2] [--quix]

Starts (or reuses) the local stack, replays the shared equity trades and BAC quotes (4 M ticks
over 5 days) at full speed in a loop, shifting each pass a week later, and reads the committed
1 s bars back. Reports sustained ticks/s (first tick produced to the pass's last bar committed),
the bar worker's emit latency (watermark passing window_end + lateness to the bar's transaction
committed, from its Prometheus histogram), and its resident memory over the run. With ``--quix``
a Quix Streams tumbling-window application computes the same 1 s bars on the same broker from
JSON ticks, as the baseline. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import polars as pl
from confluent_kafka import Consumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tickforge.platform.data_sets import full_or_sample
from tickforge.platform.io.files import TickFile, read_quotes, read_trades
from tickforge.platform.io.kafka import apply_topics, marker_watermark, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.stack.launcher import LocalStack, endpoints_env
from tickforge.platform.topics import bar_topic
from tickforge.streaming.replay import replay

WEEK_MS = 7 * 86_400_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shifted(tick_file: TickFile, by_ms: int) -> TickFile:
    return TickFile(
        tick_file.kind,
        tick_file.source,
        tick_file.data.with_columns(pl.col("ts_ms") + by_ms),
        tick_file.dead_letters.head(0),
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def histogram_percentiles(
    text: str, worker: str, timeframe: str, metric: str = "emit_latency_ms", label: str = "timeframe"
) -> dict[str, float]:
    """p50/p95/p99 from a Prometheus histogram (linear inside a bucket)."""
    pattern = re.compile(
        rf'tickforge_{metric}_bucket\{{le="([^"]+)",{label}="{timeframe}",worker="{worker}"\}} ([0-9.e+]+)'
    )
    buckets = sorted(((float("inf") if le == "+Inf" else float(le)), float(n)) for le, n in pattern.findall(text))
    if not buckets or buckets[-1][1] == 0:
        return {}
    total = buckets[-1][1]
    out = {}
    for q in (0.5, 0.95, 0.99):
        rank, prev_le, prev_n = q * total, 0.0, 0.0
        for le, n in buckets:
            if n >= rank:
                out[f"p{int(q * 100)}"] = round(
                    le if le == float("inf") else prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9), 2
                )
                break
            prev_le, prev_n = le, n
    out["count"] = int(total)
    return out


class BarReader(threading.Thread):
    """Counts committed 1 s bars and tracks the latest watermark marker per partition."""

    def __init__(self, settings: Settings, partitions: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"bench-{time.time_ns()}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.subscribe([topic_name(settings, bar_topic("1s"))])
        self.bars = 0
        self.watermarks = [0] * partitions
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            for msg in self.consumer.consume(10_000, timeout=0.1):
                if msg.error():
                    continue
                wm = marker_watermark(msg)
                if wm is None:
                    self.bars += 1
                else:
                    self.watermarks[msg.partition()] = max(self.watermarks[msg.partition()], wm)
        self.consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of replay passes")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--quix", action="store_true", help="also run the Quix Streams baseline")
    parser.add_argument("--rate", type=float, default=None, help="offered load in ticks/s (default: flat out)")
    parser.add_argument("--chunk-rows", type=int, default=20_000, help="replay batch size (ticks per message)")
    parser.add_argument("--no-bins", action="store_true", help="the bar worker publishes 1 s bars only")
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help="replay at this event-time speed-up instead of flat out (latency at a steady rate)",
    )
    args = parser.parse_args()

    status = LocalStack().up(["kafka"])
    env = endpoints_env(status)
    os.environ.update(env)
    prefix = f"bench{int(time.time())}."
    os.environ["TICKFORGE_KAFKA__TOPIC_PREFIX"] = prefix
    os.environ["TICKFORGE_KAFKA__PARTITIONS"] = str(args.partitions)
    settings = Settings()
    apply_topics(settings)
    trades = read_trades(full_or_sample("us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"))
    quotes = read_quotes(full_or_sample("us_equity_nbbo_BAC_2013-10-07_2013-10-11.csv.gz"))
    ticks_per_pass = trades.data.height + quotes.data.height

    metrics_port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "tickforge.cli", "stream", "bar-worker", *(["--no-emit-bins"] if args.no_bins else [])],
        env={**os.environ, "TICKFORGE_STREAMING__METRICS_PORT": str(metrics_port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    reader = BarReader(settings, args.partitions)
    reader.start()
    rss: list[float] = []
    passes = []
    started = time.monotonic()
    try:
        time.sleep(3)  # worker start-up (imports, group join, transactional id)
        k = 0
        while time.monotonic() - started < args.duration or k == 0:
            t0 = time.monotonic()
            stats = replay(
                settings,
                shifted(trades, k * WEEK_MS),
                shifted(quotes, k * WEEK_MS),
                speed=args.speed,
                chunk_rows=args.chunk_rows,
                rate=args.rate,
            )
            produced = time.monotonic() - t0
            while min(reader.watermarks) < stats.end_watermark:
                rss.append(rss_mb(worker.pid))
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            passes.append(
                {
                    "ticks": ticks_per_pass,
                    "produce_s": round(produced, 2),
                    "to_last_bar_s": round(elapsed, 2),
                    "ticks_per_s": round(ticks_per_pass / elapsed),
                }
            )
            rss.append(rss_mb(worker.pid))
            k += 1
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    finally:
        worker.terminate()
        worker.wait(30)
        reader.stop = True
        reader.join(10)
    steady = passes[1:] or passes
    result = {
        "partitions": args.partitions,
        "bins_published": not args.no_bins,
        "replay_speed": args.speed or "max",
        "replay_chunk_rows": args.chunk_rows,
        "offered_ticks_per_s": args.rate or "max",
        "passes": len(passes),
        "ticks_total": ticks_per_pass * len(passes),
        "bars_1s_committed": reader.bars,
        "sustained_ticks_per_s": round(sum(p["ticks"] for p in steady) / sum(p["to_last_bar_s"] for p in steady)),
        "first_pass": passes[0],
        "emit_latency_ms_1s": histogram_percentiles(metrics, "bar-worker", "1s"),
        # Per transaction (not bar-weighted): where a bar's latency goes.
        "transaction_process_ms": histogram_percentiles(metrics, "bar-worker", "process", "transaction_ms", "part"),
        "transaction_commit_ms": histogram_percentiles(metrics, "bar-worker", "commit", "transaction_ms", "part"),
        "worker_rss_mb": {
            "first": round(rss[0], 1),
            "max": round(max(rss), 1),
            "last": round(rss[-1], 1),
            "after_first_pass": round(rss[len(rss) // max(len(passes), 1)], 1),
        },
        "duration_s": round(time.monotonic() - started, 1),
    }
    if args.quix:
        from bench.quix_baseline import run_quix_baseline

        result["quix_streams"] = run_quix_baseline(settings, trades)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
