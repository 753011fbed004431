"""The supervisor stops what a worker that died on its own left in its process group (dagster dev's
webserver and daemon outlive it there), with real processes and no stack."""

from __future__ import annotations

import signal
import time

from tickforge.platform.stack.process import ProcessRef, is_alive, process_start_time, send_signal
from tickforge.streaming.supervisor import Supervised, Supervisor, _spawn


def _wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_worker_that_exits_takes_the_children_of_its_group_with_it(tmp_path):
    child_pid_file = tmp_path / "child.pid"
    # A leader that leaves a child behind in its group and exits 3, as a crashing `dagster dev` does.
    argv = ["sh", "-c", f"sleep 300 & echo $! > {child_pid_file}; exit 3"]
    proc, ref = _spawn(argv, tmp_path / "logs" / "leader.log", {"PATH": "/usr/bin:/bin"})
    assert _wait(lambda: child_pid_file.exists() and child_pid_file.read_text().strip() and not is_alive(ref))
    child_pid = int(child_pid_file.read_text())
    start = process_start_time(child_pid)
    assert start is not None
    child = ProcessRef(child_pid, start)
    assert is_alive(child)  # orphaned in the dead leader's group

    try:
        supervisor = Supervisor([], tmp_path)
        worker = Supervised("dagster", pid=ref.pid, start_time=ref.start_time, started_at=time.time(), proc=proc)
        supervisor.stop()  # watch only: no restart
        supervisor._watch(worker, time.time())

        assert worker.last_exit == "exit 3" and worker.pid is None
        assert _wait(lambda: not is_alive(child)), "the child the worker left in its group still runs"
    finally:
        send_signal(child, signal.SIGKILL, group=False)  # never left behind, even when the test fails
