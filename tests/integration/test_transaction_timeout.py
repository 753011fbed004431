"""Workers stalled past their transaction timeout (what a heavily loaded machine does): the
coordinator aborts the open transaction and bumps the producer's epoch, the group drops the member;
each worker must abort or re-initialise, read its input again from the committed checkpoints and
still emit every bar exactly once.

A broker of the module's own (as in test_scale_out), the equity demo day's 14:00 hour replayed
paced, the bar and timeframe workers SIGSTOPped together for 4 s (past the 2.5 s transaction
timeout and the 3 s session) five times mid-stream. A worker that exits is started again, as the
supervisor does (whether a stall may make it exit is test_runtime_stalled_fence's question).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration import test_scale_out as scale
from tests.integration.pipeline import assert_bars_equal, bars_frame, read_topic, stop_worker
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.topics import bar_topic
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
TIMEFRAMES = ["1s", "1m", "3m", "5m", "15m"]
STALL_S = 4.0  # past the 2.5 s transaction timeout and the 3 s session timeout
STALLS = 5


# The scale-out tests' private broker (a module's own, the stack's configuration), their settings
# on it and their slice of the demo day (its 14:00 hour).
broker_env = scale.broker_env
private_settings = scale.scale_settings
equity_slice = scale.equity_hour


def _start(command: str, log_dir: Path) -> tuple[subprocess.Popen, Path]:
    return scale._start(command, "a", log_dir), log_dir / f"{command}-a.log"


def test_workers_stalled_past_their_transaction_timeout_still_emit_every_bar_once(
    private_settings, equity_slice, tmp_path
):
    s = private_settings
    expected = build_bars(equity_slice, TIMEFRAMES, partitions=s.kafka.partitions).bars
    workers = {name: _start(name, tmp_path) for name in ("bar-worker", "timeframe-worker")}
    exits: dict[str, list[int]] = {name: [] for name in workers}

    def keep_alive() -> None:  # what the supervisor does: a worker that exited is started again
        for name, (proc, _) in list(workers.items()):
            code = proc.poll()
            if code is not None:
                exits[name].append(code)
                workers[name] = _start(name, tmp_path)

    def stall_all(sig: int) -> None:
        for proc, _ in workers.values():
            proc.send_signal(sig)

    rate = max(1, equity_slice.data.height // 25)  # ~25 s of paced input: the stalls land mid-stream
    publisher = threading.Thread(target=lambda: replay(s, equity_slice, rate=rate, chunk_rows=500), daemon=True)
    try:
        time.sleep(8)  # the workers join their groups
        publisher.start()
        for _ in range(STALLS):
            time.sleep(1.5)
            keep_alive()
            stall_all(signal.SIGSTOP)
            time.sleep(STALL_S)
            stall_all(signal.SIGCONT)
        for _ in range(30):
            time.sleep(1)
            keep_alive()
        publisher.join(180)
        logs = {name: path.read_text() for name, (_, path) in workers.items()}
        for name, text in logs.items():
            print(
                name,
                {
                    k: text.count(k)
                    for k in (
                        "transaction aborted",
                        "producer re-initialised",
                        '"fenced"',
                        "consumer replaced",
                        "Traceback",
                    )
                },
                "exits",
                exits[name],
            )
        for tf in TIMEFRAMES:
            values, _ = read_topic(s, bar_topic(tf), idle_s=4, expect=expected[tf].height)
            print(tf, len(values), expected[tf].height)
            assert_bars_equal(bars_frame(values), expected[tf])
    finally:
        for proc, _ in workers.values():
            stop_worker(proc)
