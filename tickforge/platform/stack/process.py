"""Detached service processes: spawn, identify, probe, stop; and local TCP ports.

Linux only: a process is identified by its pid *and* its start time from ``/proc/<pid>/stat``, so a
pid recycled after a reboot or a crash is never mistaken for (or killed as) one of our services.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tickforge.platform.stack.base import StackError

LOCALHOST = "127.0.0.1"

# Popen objects of the services this Python process started. Kept alive on purpose: a collected
# Popen of a running child warns (ResourceWarning), and poll()/wait() reap our own zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRef:
    """A started process: its pid and its kernel start time (clock ticks since boot)."""

    pid: int
    start_time: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # Field 22 of /proc/<pid>/stat; fields[0] here is field 3 (state).
    return None if fields is None else int(fields[19])


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def is_alive(ref: ProcessRef) -> bool:
    """True while the very process we started runs (zombies and recycled pids count as gone)."""
    _reap(ref.pid)
    fields = _stat_fields(ref.pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == ref.start_time


def listens_on(ref: ProcessRef, port: int) -> bool:
    """True when ``port`` is listened on by the process we started or one of its descendants.

    A port that answers is not enough: two stacks (two checkouts) may pick the same free port a
    moment apart; the one that loses the bind exits, and until it does, its readiness probe
    reaches the other stack's service."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    for pid in _descendants(ref.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; field 9 the socket inode
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    user: str | None = None,
) -> ProcessRef:
    """Start ``argv`` detached: own session (so it outlives the caller and is stopped as a
    group), stdin from /dev/null, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {argv[0]}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    _CHILDREN[child.pid] = child
    start_time = process_start_time(child.pid)
    if start_time is None:
        raise StackError(f"{argv[0]} exited at once; see {log_path}")
    return ProcessRef(child.pid, start_time)


def send_signal(ref: ProcessRef, sig: signal.Signals, *, group: bool) -> None:
    """Signal the process (or its whole process group) if it is still ours."""
    if not is_alive(ref):
        return
    try:
        if group:
            os.killpg(ref.pid, sig)
        else:
            os.kill(ref.pid, sig)
    except ProcessLookupError:
        pass


def kill_group(ref: ProcessRef) -> None:
    """SIGKILL whatever is left in the process's group: the leader, or children it orphaned.

    The group id is the leader's pid (``start_new_session``); it is only trusted while the leader
    is ours or gone, never when the pid now belongs to an unrelated process.
    """
    start = process_start_time(ref.pid)
    if start is not None and start != ref.start_time:
        return
    try:
        os.killpg(ref.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(ref.pid)


def log_tail(log_path: Path, lines: int = 15) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_checked(
    argv: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    user: str | None = None,
    timeout: float = 600,
) -> None:
    """Run a short setup command (format, initdb, mvn); on failure raise with its output's tail."""
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        user=user,
        group=user,
        extra_groups=[] if user else None,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise StackError(f"{what} failed (exit {result.returncode}):\n" + "\n".join(output))


def port_accepts(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """Whether a server could bind ``port`` now. SO_REUSEADDR as the servers use it, so sockets
    of a just-stopped service lingering in TIME_WAIT do not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def any_free_port(exclude: set[int], host: str = LOCALHOST) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def probe_ok(probe: Callable[[], bool]) -> bool:
    """A readiness probe that raises counts as "not ready yet"."""
    try:
        return probe()
    except Exception:  # any client error while a server boots means "not yet"
        return False
