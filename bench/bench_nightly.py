"""Benchmark: the nightly Dagster job for one UTC day of SPY, BAC and AIG trades on the local stack.

    .venv/bin/python bench/bench_nightly.py [--day 2013-10-08] [--symbols SPY,BAC,AIG]

Setup (not timed as part of the job): start the local stack (``LocalStack().up()``, state folder
from ``TICKFORGE_STATE_DIR``), read the day's trades from the shared data, land them in S3 with
``tickforge.platform.io.raw_layout.land_trades_parquet``, build the golden bars with the offline streaming
kernel (``build_bars``) and store them with ``upsert_bars``, all in a schema, buckets and a
Snowflake database of the benchmark's own. Then ``nightly`` runs in-process for the partition
(default run config: the 2013 day is past the 100-day retention, so it is archived too).

Per asset: wall time = STEP_START to STEP_SUCCESS/STEP_FAILURE event timestamps of its step
(the dbt step builds all marts). Peak memory = the process's resident set size (RSS, from
``/proc/self/statm``) sampled every 10 ms by a thread, maximum over the samples inside the step;
``rss_delta_mb`` is that peak minus the RSS at the step's start. RSS rather than tracemalloc,
because most of the memory is native (polars, Arrow, pandas buffers, the Snowflake connector),
which tracemalloc does not see; RSS includes everything but is process-wide (what earlier steps
left allocated counts, hence the delta). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRADES_FILE = "us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class RssSampler(threading.Thread):
    def __init__(self, every_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.every_s, self.samples, self._halt = every_s, [], threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.time(), rss_bytes()))
            time.sleep(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def setup(args, tmp: Path) -> tuple[object, dict]:
    import boto3
    import polars as pl
    import psycopg

    from tickforge.defs.lib.partitions import day_bounds_ms
    from tickforge.defs.s3.resources import land_trades_parquet
    from tickforge.demo import shared_data_dir
    from tickforge.platform.bars.offline import build_bars
    from tickforge.platform.contracts import Bar
    from tickforge.platform.io.files import TickFile, read_trades
    from tickforge.platform.io.postgres import apply_migrations, upsert_bars
    from tickforge.platform.settings import Settings, state_dir_from_env
    from tickforge.platform.stack.launcher import LocalStack, endpoints_env

    t0 = time.monotonic()
    os.environ.update(endpoints_env(LocalStack(state_dir=state_dir_from_env()).up()))
    tag = uuid.uuid4().hex[:8]
    os.environ |= {
        "TICKFORGE_POSTGRES__SCHEMA_NAME": f"bench{tag}",
        "TICKFORGE_S3__RAW_BUCKET": f"bench-raw-{tag}",
        "TICKFORGE_S3__ARCHIVE_BUCKET": f"bench-archive-{tag}",
        "TICKFORGE_SNOWFLAKE__DATABASE": f"BENCH_{tag.upper()}",
        "TICKFORGE_DBT_TARGET": "local",
    }
    s = Settings()
    stack_s = time.monotonic() - t0
    client = boto3.client(
        "s3",
        endpoint_url=s.s3.endpoint_url,
        region_name=s.s3.region,
        aws_access_key_id=s.s3.access_key_id,
        aws_secret_access_key=s.s3.secret_access_key.get_secret_value(),
    )
    for bucket in (s.s3.raw_bucket, s.s3.archive_bucket):
        client.create_bucket(Bucket=bucket)
    ticks = read_trades(shared_data_dir() / TRADES_FILE)
    start, end = day_bounds_ms(args.day)
    data = ticks.data.filter(
        pl.col("symbol").is_in(args.symbols) & pl.col("ts_ms").is_between(start, end, closed="left")
    )
    trades = TickFile("trades", ticks.source, data, ticks.dead_letters.clear())
    land_trades_parquet(s, trades.data)
    dsn = s.postgres.dsn.get_secret_value()
    apply_migrations(dsn, s.postgres.schema_name, s.streaming.timeframes)
    built = build_bars(
        trades,
        s.streaming.timeframes,
        lateness_ms=s.streaming.allowed_lateness_ms,
        dedup_horizon_ms=s.streaming.dedup_horizon_ms,
    )
    golden = {}
    with psycopg.connect(dsn) as conn:
        for tf, frame in built.bars.items():
            bars = [
                Bar(timeframe=tf, first_ts=r["window_start"], last_ts=r["window_end"] - 1, **r)
                for r in frame.to_dicts()
            ]
            golden[tf] = upsert_bars(conn, s.postgres.schema_name, tf, bars)
        conn.commit()
    info = {
        "trades": data.height,
        "symbols": sorted(set(data["symbol"])),
        "golden_bars": golden,
        "stack_up_s": round(stack_s, 1),
        "setup_s": round(time.monotonic() - t0, 1),
    }
    return s, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--day", default="2013-10-08")
    parser.add_argument("--symbols", default="SPY,BAC,AIG", type=lambda v: v.split(","))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-nightly-"))
    settings, info = setup(args, tmp)

    from dagster import DagsterEventType, DagsterInstance

    from tickforge.definitions import build_definitions

    job = build_definitions(settings).resolve_job_def("nightly")
    instance = DagsterInstance.ephemeral()
    sampler = RssSampler()
    sampler.start()
    t0, rss0 = time.time(), rss_bytes()
    saved = os.dup(1)
    os.dup2(2, 1)  # dbt's output to stderr: stdout carries the JSON only
    try:
        result = job.execute_in_process(
            partition_key=args.day,
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
    wall = time.time() - t0
    sampler.stop()

    steps: dict[str, dict] = {}
    for record in instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        entry = steps.setdefault(event.step_key, {})
        if event.event_type == DagsterEventType.STEP_START:
            entry["start"] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            entry["end"], entry["ok"] = record.timestamp, event.event_type == DagsterEventType.STEP_SUCCESS
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            entry.setdefault("assets", []).append(event.asset_key.to_user_string())
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            data = event.event_specific_data
            entry.setdefault("checks", {})[data.check_name] = data.passed
    per_asset = {}
    for key, e in sorted(steps.items(), key=lambda kv: kv[1].get("start", 0)):
        if "start" not in e or "end" not in e:
            continue
        inside = [r for t, r in sampler.samples if e["start"] <= t <= e["end"]]
        at_start = min(sampler.samples, key=lambda tr: abs(tr[0] - e["start"]))[1]
        peak = max(inside, default=at_start)
        name = key if len(e.get("assets", [])) <= 1 else f"{key} ({len(e['assets'])} assets)"
        per_asset[name] = {
            "wall_s": round(e["end"] - e["start"], 2),
            "peak_rss_mb": round(peak / 2**20, 1),
            "rss_delta_mb": round((peak - at_start) / 2**20, 1),
            "success": e.get("ok"),
            "checks": e.get("checks", {}),
        }
    out = {
        "day": args.day,
        **info,
        "success": result.success,
        "assets": per_asset,
        "total": {
            "wall_s": round(wall, 2),
            "peak_rss_mb": round(max(r for _, r in sampler.samples) / 2**20, 1),
            "rss_at_start_mb": round(rss0 / 2**20, 1),
            "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        "memory_method": "RSS of this process sampled every 10 ms (/proc/self/statm), max within each step",
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
