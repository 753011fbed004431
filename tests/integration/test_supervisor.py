"""`tickforge stream start` supervises for real: a SIGKILLed worker is started again (restart count
in `stream status --json`), a hung one (SIGSTOP: its metrics endpoint goes silent) is replaced,
the restarted worker makes the same bars as offline, and `stream stop` leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.integration.pipeline import assert_bars_equal, bars_frame, read_topic, wait_until
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.topics import bar_topic
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
LIVENESS_TIMEOUT_S = 4


def _cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tickforge.cli", "stream", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _status() -> dict:
    return json.loads(_cli("status", "--json"))


def _process_groups(pgids: set[int]) -> list[int]:
    """Pids of live (not zombie) processes in any of the process groups."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) in pgids:
            found.append(int(entry.name))
    return found


def test_supervisor_restarts_killed_and_hung_workers_and_stop_leaves_nothing(settings, samples, monkeypatch):
    monkeypatch.setenv("TICKFORGE_STREAMING__LIVENESS_TIMEOUT_S", str(LIVENESS_TIMEOUT_S))
    crypto = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    sample = TickFile(
        "trades",
        crypto.source,
        crypto.data.filter(pl.col("symbol").is_in(["ETHUSD_PERP", "BTCUSD_PERP"])),
        crypto.dead_letters,
    )
    started = json.loads(_cli("start", "--only", "bar-worker", "--only", "timeframe-worker"))
    seen: set[int] = set(started.values())
    try:
        status = _status()
        supervisor_pid = status["supervisor"]["pid"]
        assert status["supervisor"]["running"]
        assert {n: (w["running"], w["restarts"]) for n, w in status["workers"].items()} == {
            "bar-worker": (True, 0),
            "timeframe-worker": (True, 0),
        }
        assert json.loads(_cli("start"))["bar-worker"] == started["bar-worker"]  # running: not started twice

        os.kill(started["bar-worker"], signal.SIGKILL)
        wait_until(
            lambda: (
                _status()["workers"]["bar-worker"]["restarts"] == 1 and _status()["workers"]["bar-worker"]["running"]
            ),
            30,
            0.3,
            "the bar worker's restart",
        )
        restarted = _status()["workers"]["bar-worker"]
        assert restarted["pid"] != started["bar-worker"] and restarted["last_exit"] == "killed by signal 9"
        seen.add(restarted["pid"])

        # A hung worker: alive, but its metrics endpoint (once answering) goes silent.
        wait_until(
            lambda: _status()["workers"]["timeframe-worker"]["healthy"] is True,
            60,
            0.5,
            "the timeframe worker's metrics endpoint",
        )
        os.kill(started["timeframe-worker"], signal.SIGSTOP)
        wait_until(
            lambda: (
                _status()["workers"]["timeframe-worker"]["restarts"] == 1
                and _status()["workers"]["timeframe-worker"]["running"]
            ),
            LIVENESS_TIMEOUT_S + 30,
            0.5,
            "the hung timeframe worker's replacement",
        )
        replaced = _status()["workers"]["timeframe-worker"]
        assert replaced["last_exit"] == "unhealthy" and replaced["pid"] != started["timeframe-worker"]
        seen.add(replaced["pid"])

        # The restarted workers do their job: the same bars as offline.
        replay(settings, sample)
        for tf in ("1s", "1m"):
            expected = build_bars(sample, [tf], partitions=settings.kafka.partitions).bars[tf]
            values, _ = read_topic(settings, bar_topic(tf), idle_s=3, expect=expected.height)
            assert_bars_equal(bars_frame(values), expected)
        assert _status()["workers"]["bar-worker"]["restarts"] == 1  # no restarts while working
    finally:
        stopped = json.loads(_cli("stop"))
    assert sorted(stopped["stopped"]) == ["bar-worker", "timeframe-worker"]
    assert _process_groups(seen | {supervisor_pid}) == []
    assert _status() == {"supervisor": {"pid": None, "running": False}, "workers": {}}
