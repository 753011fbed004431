"""``tickforge demo``: the whole platform on one real trading day, on the local stack.

Starts the stack and the workers, replays 2013-10-08 (SPY, BAC, AIG trades and BAC quotes, the
samples the repository ships in ``data/samples``) through Kafka, waits for the golden bars, checks them against the independent
reference, runs the nightly Dagster job for that day (including the research loop: a sweep of every
registry strategy over the daily-bar sample and the day's golden 5 m / 15 m bars, scores, the next
weekday's picks and the scorecard, with the full registry grid: it adds about ten seconds), and
leaves ``dagster dev`` and the live view (research page at /research) running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import typer

DEMO_DAY = "2013-10-08"
REPO = Path(__file__).resolve().parents[1]


def _say(step: str, started: float) -> None:
    typer.echo(f"[{time.monotonic() - started:6.1f}s] {step}", err=True)


def demo_sample() -> tuple[Path, Path]:
    """The demo day's trades and BAC quotes, as the repository ships them (data/samples)."""
    from tickforge.platform.data_sets import SAMPLES_DIR

    trades = SAMPLES_DIR / f"us_equity_trades_SPY_BAC_AIG_{DEMO_DAY}.csv.gz"
    quotes = SAMPLES_DIR / f"us_equity_nbbo_BAC_{DEMO_DAY}.csv.gz"
    for path in (trades, quotes):
        if not path.is_file():
            raise FileNotFoundError(f"the demo sample {path} is missing (data/samples/cut_samples.py cuts it)")
    return trades, quotes


def run_demo(keep_running: bool = True) -> dict:
    from tickforge.platform.commands.bars import validate_bar_source
    from tickforge.platform.io.files import read_quotes, read_trades
    from tickforge.platform.io.kafka import apply_topics
    from tickforge.platform.settings import load_settings, state_dir_from_env
    from tickforge.platform.stack.launcher import LocalStack, endpoints_env
    from tickforge.streaming import supervisor
    from tickforge.streaming.registry import names
    from tickforge.streaming.replay import replay
    from tickforge.trading.cli import demo_paper_day

    started = time.monotonic()
    # The demo runs on a stack of its own, started clean each time, so a second `make demo`
    # shows the same thing as the first (a developer's `tickforge stack` in .tickforge is
    # untouched).
    base = state_dir_from_env()
    state_dir = Path(os.environ.get("TICKFORGE_DEMO_STATE_DIR", base / "demo-stack"))
    os.environ["TICKFORGE_STATE_DIR"] = str(state_dir)
    supervisor.stop(state_dir)
    stack = LocalStack(state_dir=state_dir)
    stack.down(wipe=True)
    status = stack.up()
    env = endpoints_env(status)
    os.environ.update(env)
    settings = load_settings()
    _say("local stack up: " + ", ".join(status), started)
    apply_topics(settings)
    supervisor.start(env={**env, "TICKFORGE_STATE_DIR": str(state_dir)}, state_dir=state_dir)
    _say("workers started: " + ", ".join(names()), started)
    trades_path, quotes_path = demo_sample()
    trades, quotes = read_trades(trades_path), read_quotes(quotes_path)
    stats = replay(settings, trades, quotes)
    _say(
        f"replayed {stats.trades:,} trades and {stats.quotes:,} quotes of {DEMO_DAY} "
        f"({stats.ticks_per_s:,.0f} ticks/s)",
        started,
    )
    _wait_for_golden(settings, stats.end_watermark, started)
    report = validate_bar_source(
        trades_path, "postgres", "1s,1m,3m,5m,15m", settings.streaming.allowed_lateness_ms, quotes_path
    )
    counts = {tf: r["rows_actual"] for tf, r in report["timeframes"].items()}
    _say(f"golden bars in PostgreSQL {counts}; equal to the independent reference: {report['ok']}", started)
    _wait_for_raw_sink(settings, started)
    nightly = _run_nightly(trades, env)
    _say(f"nightly Dagster job for {DEMO_DAY}: {nightly}", started)
    research = nightly["research"]
    _say(
        f"research: {research['picks']} picks for {research['pick_day']} ({research['checks_passed']} research "
        f"checks passed, failed: {research['checks_failed'] or 'none'}; {research['step_seconds']}s of research steps)",
        started,
    )
    paper = demo_paper_day(trades_path, quotes_path, research["pick_day"], state_dir / "paper")
    _say(
        f"paper trading on {DEMO_DAY}: "
        + (
            paper.get("error")
            or f"{paper['traded']}{' (in-sample)' if paper.get('in_sample') else ''}: {paper['orders']} orders "
            f"{paper['orders_by_status']}, {paper['fills']} fills, PnL {paper['pnl']}, parity {paper['parity']}"
        ),
        started,
    )
    urls = {}
    if keep_running:
        urls["dagster"] = _start_dagster(state_dir, {**env, "TICKFORGE_STATE_DIR": str(state_dir)})
        urls["live view"] = _serving_url(state_dir, "dashboard", timeout=120)
        urls["research page"] = f"{urls['live view']}/research"
    summary = {
        "day": DEMO_DAY,
        "replay": stats.__dict__,
        "golden_bars": counts,
        "reference_ok": report["ok"],
        "nightly": nightly,
        "paper": paper,
        "urls": urls,
    }
    if not keep_running:
        supervisor.stop(state_dir)
    return summary


def _wait_for_golden(settings, end_watermark: int | None, started: float, timeout: float = 300.0) -> None:
    import psycopg

    from tickforge.platform.io.postgres import partition_watermarks

    deadline = time.monotonic() + timeout
    dsn = settings.postgres.dsn.get_secret_value()
    partitions = range(settings.kafka.partitions)
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            # Each bar topic partition is consumed on its own: every timeframe of every partition
            # must have reached the end (a partition with no row yet has not).
            reached = [
                partition_watermarks(conn, settings.postgres.schema_name, tf) for tf in settings.streaming.timeframes
            ]
        if end_watermark is not None and all(
            marks.get(p, -1) >= end_watermark for marks in reached for p in partitions
        ):
            _say("golden bars complete (every timeframe's watermark reached the end of the day)", started)
            return
        time.sleep(1)
    raise RuntimeError("golden bars did not complete in time: see .tickforge/logs/*.log")


def _wait_for_raw_sink(settings, started: float, timeout: float = 300.0) -> None:
    """The raw sink has landed every tick once its committed offsets reach the topic's end."""
    from confluent_kafka import TopicPartition

    from tickforge.platform.io.kafka import make_consumer, topic_name
    from tickforge.platform.topics import TICKS
    from tickforge.streaming.raw_sink import NAME

    topic = topic_name(settings, TICKS)
    probe = make_consumer(settings, f"{settings.kafka.topic_prefix}{NAME}")  # reads the sink's commits
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        ends = [probe.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = [tp.offset for tp in probe.committed(parts, timeout=10)]
            # The end-of-day markers are the last messages; the sink commits past them too.
            if all(c >= e for c, e in zip(committed, ends, strict=True)):
                _say("raw ticks landed in S3 as hourly Parquet", started)
                return
            time.sleep(1)
    finally:
        probe.close()
    raise RuntimeError("the raw sink did not catch up in time: see .tickforge/logs/raw-sink.log")


def _run_nightly(trades, env: dict[str, str]) -> dict:
    """Materialize the nightly job's partition in-process (it shows in the UI's runs)."""
    from dagster import DagsterInstance

    from tickforge.definitions import defs

    os.environ.setdefault("DAGSTER_HOME", str(REPO))
    # Run as the night after the demo day would: the day is inside the archive's retention.
    next_day = (datetime.strptime(DEMO_DAY, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")
    result = defs.get_job_def("nightly").execute_in_process(
        partition_key=DEMO_DAY,
        instance=DagsterInstance.get(),
        raise_on_error=False,
        run_config={
            "loggers": {"console": {"config": {"log_level": "ERROR"}}},
            "ops": {"bar_archive": {"config": {"as_of": next_day}}},
        },
    )
    checks = [
        (e.asset_check_evaluation_data.check_name, e.asset_check_evaluation_data.passed)
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return {
        "success": result.success,
        "checks": dict(checks),
        "failed_steps": failed,
        "research": _research_summary(result),
    }


def _research_summary(result) -> dict:
    """What the research steps of the nightly run made, and how long they took (steps and checks)."""
    from tickforge.defs.research.assets import RESEARCH_STEPS

    def metadata(node: str) -> dict:
        found = result.asset_materializations_for_node(node)
        return {k: v.value for k, v in found[0].metadata.items()} if found else {}

    evaluations = [
        e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    research_checks = [
        (e.asset_key.to_user_string(), e.check_name, e.passed)
        for e in evaluations
        if e.asset_key.path[0].startswith(RESEARCH_STEPS)
    ]
    seconds = (
        sum(
            e.event_specific_data.duration_ms
            for e in result.all_events
            if e.event_type_value == "STEP_SUCCESS" and e.step_key.startswith(RESEARCH_STEPS)
        )
        / 1000
    )
    picks, card = metadata("next_day_picks"), metadata("picks_scorecard")
    return {
        "pick_day": picks.get("pick_day"),
        "picks": picks.get("picks"),
        "picks_files": picks.get("files"),
        "scorecard_complete": card.get("complete"),
        "checks_passed": sum(c[2] for c in research_checks),
        "checks_failed": [f"{a}:{n}" for a, n, ok in research_checks if not ok],
        "step_seconds": round(seconds, 1),
    }


def _start_dagster(state_dir: Path, env: dict[str, str]) -> str:
    port = os.environ.get("TICKFORGE_DAGSTER_PORT", "3000")
    # Started after the nightly run (its sensors must not load windows while the day replays), so
    # not under the supervisor, whose set of workers is fixed at its start; and not written into
    # workers.json, which is the supervisor's own (it rewrites the file twice a second).
    log = open(state_dir / "logs" / "dagster.log", "ab")
    subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-h", "127.0.0.1", "-p", port, "-w", "workspace.yaml"],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env, "DAGSTER_HOME": str(REPO)},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/server_info", timeout=180)
    return url


def _serving_url(state_dir: Path, name: str, timeout: float) -> str:
    """The web UI of a registry entry on the port the supervisor gave it, once it answers."""
    from tickforge.ops.lifecycle import web_url
    from tickforge.streaming import registry, supervisor

    spec = registry.worker(name)
    url = web_url(spec, supervisor.status(state_dir)["workers"].get(name, {}))
    if url is None:
        raise RuntimeError(f"the supervisor runs no {name}: see {state_dir / 'logs' / 'supervisor.log'}")
    _wait_http(url + spec.health_path, timeout=timeout)
    return url


def _wait_http(url: str, timeout: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s: see .tickforge/logs/")
