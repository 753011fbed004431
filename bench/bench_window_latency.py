"""Window close to Snowflake facts visible, under ``dagster dev`` (webserver + daemon) on the local stack.

    .venv/bin/python bench/bench_window_latency.py [--windows 6] [--gap 8]

Seeds golden 1 m / 5 m bars of real BAC trades (2013-10-08 13:30-14:30 UTC) in PostgreSQL with the
golden watermark before them, starts ``dagster dev`` (the snowflake_window_sensor runs by default),
then closes one 5-minute window at a time by advancing the golden watermark, as the bar store does,
and polls the Snowflake endpoint until the window's 5 m fact is there. Latency = fact visible minus
watermark advanced. The baseline in the same run is a launched run of ``snowflake_window_facts_job``
for one window (what the sensor did before loading in the code server): its start-to-success time
from the Dagster instance. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tickforge.platform.bars.offline import build_bars
from tickforge.platform.contracts import Bar
from tickforge.platform.data_sets import full_or_sample
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.io.postgres import apply_migrations, record_watermark, upsert_bars
from tickforge.platform.settings import Settings
from tickforge.platform.stack.launcher import LocalStack, endpoints_env

REPO = Path(__file__).resolve().parents[1]
T1330 = 1381239000000  # 2013-10-08 13:30 UTC
MIN = 60_000
WINDOW = 5 * MIN


def seed_golden(settings: Settings) -> None:
    ticks = read_trades(full_or_sample("us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"))
    data = ticks.data.filter(
        (pl.col("symbol") == "BAC") & (pl.col("ts_ms") >= T1330) & (pl.col("ts_ms") < T1330 + 60 * MIN)
    )
    built = build_bars(TickFile("trades", ticks.source, data, ticks.dead_letters.clear()), ["1m", "5m"])
    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name
    apply_migrations(dsn, schema, ["1m", "5m"])
    with psycopg.connect(dsn) as conn:
        for tf, frame in built.bars.items():
            bars = [
                Bar(timeframe=tf, first_ts=r["window_start"], last_ts=r["window_end"] - 1, **r)
                for r in frame.to_dicts()
            ]
            upsert_bars(conn, schema, tf, bars)
        conn.commit()
    advance(settings, T1330)


def advance(settings: Settings, watermark: int) -> None:
    with psycopg.connect(settings.postgres.dsn.get_secret_value()) as conn:
        for tf in ("1m", "5m"):
            record_watermark(conn, settings.postgres.schema_name, tf, 0, watermark)
        conn.commit()


def fact_visible(cur, window_start: int) -> bool:
    cur.execute(f"SELECT COUNT(*) FROM CORE.FACT_TICKS_300S WHERE WINDOW_START = {window_start}")
    return cur.fetchone()[0] > 0


def wait_for(predicate, timeout: float, interval: float = 0.05) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None


def run_durations(dsn: str) -> list[float]:
    """Start-to-end seconds of the finished window runs, from the Dagster instance's run table."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT EXTRACT(EPOCH FROM (update_timestamp - create_timestamp)) FROM runs "
            "WHERE pipeline_name = 'snowflake_window_facts_job' AND status = 'SUCCESS'"
        ).fetchall()
    return [round(float(r[0]), 2) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=6, help="windows closed one at a time")
    parser.add_argument("--gap", type=float, default=8.0, help="seconds between window closes")
    args = parser.parse_args()

    stack = LocalStack(REPO / ".tickforge" / "bench-window-stack")
    stack.down(wipe=True)  # a fresh Dagster instance: no queued runs left from an earlier run
    status = stack.up()
    env = endpoints_env(status)
    tag = uuid.uuid4().hex[:8]
    env |= {
        "TICKFORGE_POSTGRES__SCHEMA_NAME": f"bw{tag}",
        "TICKFORGE_SNOWFLAKE__DATABASE": f"BW_{tag.upper()}",
        "TICKFORGE_KAFKA__TOPIC_PREFIX": f"bw{tag}.",
    }
    os.environ.update(env)
    settings = Settings()
    seed_golden(settings)

    home = Path(tempfile.mkdtemp(prefix="tickforge-dagster-"))
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    log = open(home / "dagster.log", "ab")
    dagster = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-h",
            "127.0.0.1",
            "-p",
            "3999",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        start_new_session=True,
    )
    import snowflake.connector

    result: dict = {}
    try:
        with snowflake.connector.connect(**settings.snowflake.connect_args()) as conn:
            cur = conn.cursor()
            # The sensor's first evaluation creates the facts (DDL) and places its cursor.
            ready = wait_for(lambda: _facts_exist(cur), timeout=300, interval=0.5)
            if ready is None:
                raise RuntimeError(f"the sensor never loaded a window; see {home / 'dagster.log'}")
            result["dagster_dev_ready_s"] = round(ready, 1)
            latencies = []
            for k in range(args.windows):
                start = T1330 + k * WINDOW
                time.sleep(args.gap)
                advance(settings, start + WINDOW)
                seconds = wait_for(lambda s=start: fact_visible(cur, s), timeout=120)
                latencies.append(None if seconds is None else round(seconds, 2))
            # Baseline in the same run: a catch-up of several windows goes through launched runs.
            advance(settings, T1330 + 12 * WINDOW)
            catch_up = wait_for(lambda: fact_visible(cur, T1330 + 11 * WINDOW), timeout=300, interval=0.2)
        done = sorted(x for x in latencies if x is not None)
        result |= {
            "windows": args.windows,
            "window_close_to_facts_s": latencies,
            "p50_s": done[len(done) // 2] if done else None,
            "max_s": done[-1] if done else None,
            "within_5s": sum(1 for x in done if x <= 5.0),
            "baseline_catch_up_runs": {
                "windows": 12 - args.windows,
                "close_to_last_fact_s": None if catch_up is None else round(catch_up, 2),
                "run_start_to_success_s": run_durations(settings.postgres.dsn.get_secret_value()),
            },
        }
    finally:
        os.killpg(dagster.pid, signal.SIGTERM)
        try:
            dagster.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dagster.pid, signal.SIGKILL)
        stack.down(wipe=True)
    print(json.dumps(result, indent=2))


def _facts_exist(cur) -> bool:
    try:
        cur.execute("SELECT COUNT(*) FROM CORE.FACT_TICKS_300S")
        return True
    except Exception:  # not created yet
        return False


if __name__ == "__main__":
    main()
