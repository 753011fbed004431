"""Local supervision of the workers: start them detached, record their pids, stop them.

For the demo and a single machine; a production deployment runs each worker under its own
supervisor (see ``docker/``). State lives in ``<state_dir>/workers.json``, logs in
``<state_dir>/logs/<worker>.log``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tickforge.platform.settings import state_dir_from_env

WORKERS: dict[str, list[str]] = {
    "bar-worker": ["stream", "bar-worker"],
    "timeframe-worker": ["stream", "timeframe-worker"],
    "bar-store": ["stream", "bar-store"],
    "raw-sink": ["stream", "raw-sink"],
    "signal-worker": ["stream", "signal-worker"],
    "pair-worker": ["stream", "pair-worker"],
    "dashboard": ["dashboard"],  # the Streamlit live view on 127.0.0.1:8501
}


def _state_file(state_dir: Path) -> Path:
    return state_dir / "workers.json"


def _load(state_dir: Path) -> dict[str, int]:
    path = _state_file(state_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def status(state_dir: Path | None = None) -> dict[str, dict]:
    state_dir = state_dir or state_dir_from_env()
    return {name: {"pid": pid, "running": _alive(pid)} for name, pid in _load(state_dir).items()}


def start(names: list[str] | None = None, env: dict[str, str] | None = None, state_dir: Path | None = None) -> dict[str, int]:
    """Start the named workers (all by default) that are not running; returns name -> pid."""
    state_dir = state_dir or state_dir_from_env()
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids = _load(state_dir)
    for name in names or list(WORKERS):
        if name in pids and _alive(pids[name]):
            continue
        log = open(logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickforge.cli", *WORKERS[name]],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        pids[name] = proc.pid
    _state_file(state_dir).write_text(json.dumps(pids, indent=2))
    return pids


def stop(state_dir: Path | None = None, timeout: float = 20.0) -> list[str]:
    """SIGTERM every recorded worker, SIGKILL what outlives ``timeout``; returns the stopped."""
    state_dir = state_dir or state_dir_from_env()
    pids = _load(state_dir)
    stopped = []
    for name, pid in pids.items():
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)  # the whole session: dagster dev has children
            stopped.append(name)
    deadline = time.monotonic() + timeout
    for pid in pids.values():
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    _state_file(state_dir).unlink(missing_ok=True)
    return stopped
