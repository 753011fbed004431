"""`tickforge up` runs the whole platform on a stack of its own (a private state folder, free ports;
the shared test stack is untouched): `status` lists every service running, `doctor` is all green
(before and after real ticks went through), a SIGKILLed worker shows as a restart, a stopped PostgreSQL turns the doctor red with a clear verdict,
and `down` leaves no process behind (checked against every live process on the machine: none has the
state folder in its command line or environment); the foreground `up` ends with them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pipeline import wait_until
from tests.integration.test_supervisor import _process_groups
from tickforge.platform.data_sets import SAMPLES_DIR
from tickforge.platform.stack.launcher import DEFAULT_PORTS, port_env_var
from tickforge.platform.stack.process import any_free_port
from tickforge.streaming import registry

pytestmark = pytest.mark.integration
CACHE = Path.home() / ".cache" / "tickforge"
CRYPTO_TRADES = "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"  # 78 k real trades, 11 minutes


@pytest.fixture
def platform_env() -> Iterator[dict[str, str]]:
    # Not under pytest's base temp: PostgreSQL runs as ``postgres`` when we are root (see test_stack).
    state_dir = Path(tempfile.mkdtemp(prefix="tickforge-up-test-"))
    state_dir.chmod(state_dir.stat().st_mode | stat.S_IXOTH)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKFORGE_")}
    env.update(
        {
            "TICKFORGE_STATE_DIR": str(state_dir),
            "TICKFORGE_KAFKA_LIB_CACHE": os.environ.get(
                "TICKFORGE_KAFKA_LIB_CACHE", str(CACHE / "kafka-4.1.1" / "lib")
            ),
            "TICKFORGE_S3_LIB_CACHE": os.environ.get("TICKFORGE_S3_LIB_CACHE", str(CACHE / "s3proxy-3.3.0" / "lib")),
            "TICKFORGE_STREAMING__LIVENESS_TIMEOUT_S": "30",
        }
    )
    ports: set[int] = set()
    for key in DEFAULT_PORTS:
        ports.add(port := any_free_port(ports))
        env[port_env_var(key)] = str(port)
    try:
        yield env
    finally:
        subprocess.run([sys.executable, "-m", "tickforge.cli", "down"], env=env, capture_output=True, timeout=180)
        shutil.rmtree(state_dir, ignore_errors=True)


def _cli(env: dict[str, str], *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "tickforge.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(env["TICKFORGE_STATE_DIR"]),
    )
    if check:
        assert result.returncode == 0, f"tickforge {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _status(env: dict[str, str]) -> dict[str, dict]:
    return {row["service"]: row for row in json.loads(_cli(env, "status", "--json").stdout)}


def _doctor(env: dict[str, str]) -> tuple[int, dict[str, dict]]:
    result = _cli(env, "doctor", "--json", check=False)
    return result.returncode, {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def _ours(state_dir: str) -> list[int]:
    """Live processes started for this state folder: it is in their command line or environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state not in ("Z", "X") and state_dir.encode() in text:
            found.append(int(entry.name))
    return found


def _foreground_up(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """`tickforge up` as a user runs it: in the foreground, printing one URL a line once healthy."""
    up = subprocess.Popen(
        [sys.executable, "-m", "tickforge.cli", "up"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        cwd=Path(env["TICKFORGE_STATE_DIR"]),
    )
    assert up.stdout is not None
    urls: dict[str, str] = {}
    while len(urls) < 3:
        line = up.stdout.readline()
        assert line, f"`tickforge up` ended early:\n{log.read_text()}"
        name, url = line.split(None, 1)
        urls[name] = url.strip()
    return up, urls


def _no_process_left(state_dir: str, pids: set[int]) -> None:
    assert _process_groups(pids) == []
    assert _ours(state_dir) == []


def test_up_status_doctor_restart_outage_and_down_leave_nothing(platform_env, tmp_path):
    env = platform_env
    state_dir = env["TICKFORGE_STATE_DIR"]
    up, urls = _foreground_up(env, tmp_path / "up.log")
    assert set(urls) == {"dashboard", "dagster", "prometheus"}

    status = _status(env)
    everything = {
        "kafka",
        "postgres",
        "s3",
        "snowflake",
        "prometheus",
        "supervisor",
        *registry.names(default_only=False),
    }
    assert set(status) == everything
    assert all(row["running"] and row["pid"] for row in status.values()), status
    assert all(status[s.name]["lag"] is not None for s in registry.consuming())
    assert urls["dagster"] == status["dagster"]["url"]
    seen = {row["pid"] for row in status.values()}

    code, checks = _doctor(env)
    assert code == 0 and {c["status"] for c in checks.values()} == {"ok"}, checks
    assert {
        "settings",
        "kafka",
        "postgres",
        "s3",
        "snowflake",
        "dagster webserver",
        "prometheus",
        "processes",
        "topics",
        "consumer lag",
        "dead letters",
        "raw sink",
        "golden 1s",
        "golden 15m",
        "dagster",
        "disk",
    } <= set(checks)

    # Real ticks through it: the golden watermarks move, the groups catch up, the doctor stays green.
    _cli(env, "stream", "replay", "--trades", str(SAMPLES_DIR / CRYPTO_TRADES), timeout=300)
    wait_until(
        lambda: all(_status(env)[s.name]["lag"] == 0 for s in registry.consuming() if s.name != "raw-sink"),
        180,
        1.0,
        "the workers catching up with the replay",
    )
    code, checks = _doctor(env)
    assert code == 0 and {c["name"] for c in checks.values() if c["status"] != "ok"} <= {"dead letters"}, checks
    assert all(checks[f"golden {tf}"]["verdict"].startswith("watermark 2024-08-") for tf in ("1s", "1m", "15m"))

    killed = status["bar-worker"]["pid"]
    os.kill(killed, signal.SIGKILL)
    wait_until(
        lambda: (row := _status(env)["bar-worker"])["restarts"] == 1 and row["running"],
        60,
        0.5,
        "the bar worker's restart",
    )
    restarted = _status(env)["bar-worker"]
    assert restarted["pid"] != killed and restarted["last_error"].startswith("killed by signal 9")
    seen.add(restarted["pid"])

    os.kill(status["postgres"]["pid"], signal.SIGINT)  # PostgreSQL's fast shutdown
    wait_until(lambda: not _status(env)["postgres"]["running"], 60, 0.5, "PostgreSQL stopping")
    code, checks = _doctor(env)
    assert code == 1
    assert checks["postgres"]["status"] == "fail" and checks["postgres"]["verdict"].startswith("does not answer")
    assert checks["postgres"]["hint"]
    assert checks["golden 1s"]["status"] == "skip" and checks["kafka"]["status"] == "ok"

    seen |= {row["pid"] for row in _status(env).values() if row["pid"]}
    down = _cli(env, "down", timeout=180)
    assert "stopped workers: bar-worker" in down.stdout
    assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()  # the foreground `up` ends with them
    _no_process_left(state_dir, seen)
    assert (Path(state_dir) / "postgres" / "data").is_dir()  # data kept without --wipe
    assert "stopped workers: none running" in _cli(env, "down").stdout  # a second `down` has nothing to do


def test_a_sigterm_while_up_starts_stops_only_what_up_started(platform_env, tmp_path):
    """On a stack that was running before, `up` starts Prometheus; a SIGTERM before it is healthy
    stops what `up` started (Prometheus, the supervisor and anything under it), not the stack."""
    from tickforge.platform.stack.launcher import LocalStack

    env = platform_env
    state_dir = Path(env["TICKFORGE_STATE_DIR"])
    _cli(env, "stack", "up", timeout=300)
    try:
        log = tmp_path / "up.log"
        up = subprocess.Popen(
            [sys.executable, "-m", "tickforge.cli", "up"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
            cwd=state_dir,
        )
        started = f"{'prometheus':<16} started"  # up's progress line once Prometheus is healthy
        wait_until(lambda: started in log.read_text() or up.poll() is not None, 180, 0.2, "Prometheus started")
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 130, log.read_text()
        stack = LocalStack(state_dir=state_dir, with_prometheus=True).status()
        assert {name for name, entry in stack.items() if entry["running"]} == {"kafka", "postgres", "s3", "snowflake"}
        left = set(_ours(str(state_dir))) - set(_process_groups({e["pid"] for e in stack.values() if e["pid"]}))
        assert left == set(), f"left running after the SIGTERM: {left}\n{log.read_text()}"
    finally:
        _cli(env, "stack", "down", check=False, timeout=180)
