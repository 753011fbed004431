"""Local supervision of the workers: one supervisor process runs them, restarts the dead and the
unhealthy, and is what ``stream start | stop | status`` talk to.

For the demo and a single machine; a production deployment runs each worker under its own
supervisor (see ``docker/``, whose health check reads the same liveness gauge).

- ``start`` spawns the supervisor detached (``tickforge stream supervise``); it starts each worker
  of the registry (``streaming/registry.py``) in its own session with a metrics port of its own
  (a service with a web UI: its usual port, or a free one when that is taken), logs in
  ``<state_dir>/logs/<worker>.log``.
- A worker is known by :class:`ProcessRef` (pid plus kernel start time), so a recycled pid is never
  taken for it nor signalled.
- Dead (exited, killed): started again after an exponential backoff (1 s, 2 s, 4 s ... up to
  ``streaming.restart_backoff_max_s``; back to 1 s after a run of a minute or more).
- Unhealthy: its liveness gauge (``tickforge_worker_liveness_seconds``, the unix time of its loop's
  last iteration) is older than ``streaming.liveness_timeout_s``, or its metrics endpoint, having
  answered before, has not answered for that long (a hung or stopped process), or its loop has not
  run once within a minute of the start (or the bound, if longer). It is stopped
  (SIGTERM, SIGKILL to its group after a grace) and started again like a dead one. A worker that
  never served the gauge is judged on being alive only.
- ``stop`` asks the supervisor to stop (it stops every worker's process group, then exits); if the
  supervisor itself is gone, ``stop`` stops the workers it recorded.

State: ``<state_dir>/supervisor.json`` (the supervisor's ProcessRef) and ``<state_dir>/workers.json``
(each worker's ProcessRef, restarts, last exit and health, rewritten by the supervisor as things
change).

Hand-written rather than supervisord or circus: neither checks a health endpoint by itself (both
need plugins), neither knows a process by its start time, and both would be a new dependency with
a daemon and a configuration format of its own for seven local processes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tickforge.platform.retry import Backoff
from tickforge.platform.settings import load_settings, state_dir_from_env
from tickforge.platform.stack.process import (
    ProcessRef,
    any_free_port,
    is_alive,
    kill_group,
    port_is_free,
    process_start_time,
    send_signal,
)
from tickforge.platform.stack.prometheus import write_targets
from tickforge.streaming import registry

log = logging.getLogger(__name__)

LIVENESS_GAUGE = "tickforge_worker_liveness_seconds"
STABLE_RUN_S = 60.0  # a worker that ran this long before dying restarts after the first delay again
STOP_GRACE_S = 10.0
STARTUP_GRACE_S = 60.0  # from start to the loop's first iteration
TICK_S = 0.5


def _supervisor_file(state_dir: Path) -> Path:
    return state_dir / "supervisor.json"


def _workers_file(state_dir: Path) -> Path:
    return state_dir / "workers.json"


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _ref(entry: object) -> ProcessRef | None:
    if isinstance(entry, dict) and entry.get("pid") and entry.get("start_time") is not None:
        return ProcessRef(int(entry["pid"]), int(entry["start_time"]))
    return None


def _supervisor_ref(state_dir: Path) -> ProcessRef | None:
    ref = _ref(_read_json(_supervisor_file(state_dir)))
    return ref if ref is not None and is_alive(ref) else None


def _spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, ProcessRef]:
    """``argv`` detached in its own session (stopped as a group), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(argv[3:])}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    start_time = process_start_time(proc.pid)
    return proc, ProcessRef(proc.pid, start_time if start_time is not None else -1)


def _terminate(*refs: ProcessRef, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each process's group (SIGCONT too: a stopped process cannot handle it), all at
    once so they stop in parallel; SIGKILL whatever is left after ``grace_s``."""
    for ref in refs:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            send_signal(ref, sig, group=True)
    deadline = time.monotonic() + grace_s
    while any(is_alive(ref) for ref in refs) and time.monotonic() < deadline:
        time.sleep(0.1)
    for ref in refs:
        kill_group(ref)  # the leader if it overstayed, and any child it left behind


def scrape_liveness(port: int, timeout: float = 2.0) -> float | None:
    """The newest liveness timestamp a metrics endpoint reports; None when it reports none.
    Raises OSError when the endpoint does not answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    stamps = [
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == LIVENESS_GAUGE
        for s in family.samples
    ]
    return max(stamps) if stamps else None


def liveness_ok(port: int, max_age_s: float) -> tuple[bool, str]:
    """A worker's health from its metrics endpoint alone (a container health check): its
    liveness gauge set, and newer than ``max_age_s``."""
    try:
        stamp = scrape_liveness(port)
    except OSError as exc:
        return False, f"metrics endpoint on port {port} does not answer: {exc}"
    if not stamp:
        return False, "the worker loop has not run yet"
    age = time.time() - stamp
    return age <= max_age_s, f"last loop iteration {age:.1f} s ago (bound {max_age_s:g} s)"


@dataclass
class Supervised:
    """One worker as the supervisor sees it (what ``workers.json`` records)."""

    name: str
    pid: int | None = None
    start_time: int | None = None
    started_at: float | None = None  # unix time
    restarts: int = 0
    last_exit: str | None = None
    metrics_port: int | None = None
    http_port: int | None = None  # a service's web UI (kept across restarts while free)
    liveness: float | None = None  # the gauge's last value
    last_answer: float | None = None  # unix time the metrics endpoint last answered
    healthy: bool | None = None
    next_start: float = 0.0  # unix time a restart is due
    backoff: Backoff = field(default_factory=Backoff)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def ref(self) -> ProcessRef | None:
        return None if self.pid is None or self.start_time is None else ProcessRef(self.pid, self.start_time)

    def record(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("proc", "backoff", "next_start")}


class Supervisor:
    def __init__(self, names: list[str], state_dir: Path) -> None:
        streaming = load_settings().streaming
        self.state_dir = state_dir
        self.liveness_timeout_s = streaming.liveness_timeout_s
        self.workers = {name: Supervised(name, backoff=Backoff(1.0, streaming.restart_backoff_max_s)) for name in names}
        self._stop = False

    def stop(self, *_: object) -> None:
        self._stop = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self._clear_leftovers()
        try:
            while not self._stop:
                now = time.time()
                for worker in self.workers.values():
                    self._watch(worker, now)
                self._save()
                time.sleep(TICK_S)
        finally:
            running = [w for w in self.workers.values() if w.ref is not None]
            _terminate(*(w.ref for w in running if w.ref is not None))
            for worker in running:
                self._exited(worker, "stopped")
            self._save()

    def _clear_leftovers(self) -> None:
        """Workers a previous supervisor left running (it was killed) are stopped, not adopted."""
        left = [
            ref
            for entry in _read_json(_workers_file(self.state_dir)).get("workers", {}).values()
            if (ref := _ref(entry)) is not None and is_alive(ref)
        ]
        if left:
            log.warning("stopping workers left by a previous supervisor", extra={"pids": [r.pid for r in left]})
            _terminate(*left)

    def _watch(self, worker: Supervised, now: float) -> None:
        ref = worker.ref
        if ref is not None and not is_alive(ref):
            # Its children (dagster dev's webserver and daemon) outlive it in its group. Killed
            # before the leader is reaped: while it is a zombie its pid, the group id, is not reused.
            kill_group(ref)
            code = worker.proc.poll() if worker.proc is not None else None
            self._exited(worker, f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}")
        elif ref is not None and not self._healthy(worker, now):
            log.warning("worker unhealthy: restarting it", extra={"worker": worker.name, "pid": ref.pid})
            _terminate(ref)
            self._exited(worker, "unhealthy")
        if worker.ref is None and now >= worker.next_start and not self._stop:
            self._start(worker, now)

    def _healthy(self, worker: Supervised, now: float) -> bool:
        if worker.metrics_port is None:
            return True
        try:
            worker.liveness = scrape_liveness(worker.metrics_port)
            worker.last_answer = now
        except OSError:
            pass
        bound = self.liveness_timeout_s
        # A gauge of 0 is one not set yet: the loop has not run once (joining its group,
        # initialising transactions), which gets a longer grace from the start.
        liveness = worker.liveness
        reported = liveness is not None and liveness > 0
        stale_gauge = liveness is not None and reported and now - liveness > bound
        never_ran = (
            liveness is not None and not reported and now - (worker.started_at or now) > max(bound, STARTUP_GRACE_S)
        )
        went_silent = worker.last_answer is not None and now - worker.last_answer > bound
        worker.healthy = not (stale_gauge or never_ran or went_silent)
        return worker.healthy

    def _exited(self, worker: Supervised, how: str) -> None:
        ran_s = time.time() - (worker.started_at or time.time())
        log.warning(
            "worker exited", extra={"worker": worker.name, "pid": worker.pid, "how": how, "ran_s": round(ran_s, 1)}
        )
        if ran_s >= STABLE_RUN_S:
            worker.backoff.reset()
        worker.next_start = time.time() + worker.backoff.next_delay()
        worker.last_exit, worker.pid, worker.start_time, worker.proc = how, None, None, None
        worker.liveness = worker.last_answer = worker.healthy = None

    def _start(self, worker: Supervised, now: float) -> None:
        spec = registry.worker(worker.name)
        env = dict(os.environ)
        argv = [sys.executable, "-m", "tickforge.cli", *spec.command]
        if spec.metrics:
            worker.metrics_port = any_free_port(set())
            env["TICKFORGE_STREAMING__METRICS_PORT"] = str(worker.metrics_port)
        if spec.http_port is not None:
            wanted = worker.http_port or spec.http_port
            worker.http_port = wanted if port_is_free(wanted) else any_free_port(set())
            argv += ["--port", str(worker.http_port)]
        worker.proc, ref = _spawn(argv, self.state_dir / "logs" / f"{worker.name}.log", env)
        if worker.started_at is not None:
            worker.restarts += 1
        worker.pid, worker.start_time, worker.started_at = ref.pid, ref.start_time, now

    def _save(self) -> None:
        _write_json(_workers_file(self.state_dir), {"workers": {n: w.record() for n, w in self.workers.items()}})
        # Prometheus scrapes what this lists: the running workers on their current metrics ports.
        write_targets(self.state_dir, {n: w.metrics_port for n, w in self.workers.items() if w.pid and w.metrics_port})


def supervise(names: list[str], state_dir: Path | None = None) -> None:
    """The supervisor process's body (``tickforge stream supervise``)."""
    state_dir = state_dir or state_dir_from_env()
    Supervisor(names, state_dir).run()


def start(
    names: list[str] | None = None,
    env: dict[str, str] | None = None,
    state_dir: Path | None = None,
    timeout: float = 30.0,
) -> dict[str, int]:
    """Start the supervisor with the named registry entries (those started by default when
    none are named); returns worker name -> pid once each has been started. With a supervisor
    running already, its workers' pids (stop it first to change which workers run)."""
    state_dir = state_dir or state_dir_from_env()
    state_dir.mkdir(parents=True, exist_ok=True)
    names = names or registry.names()
    for name in names:
        registry.worker(name)  # a ValueError naming the known ones
    if _supervisor_ref(state_dir) is None:
        _workers_file(state_dir).unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tickforge.cli", "stream", "supervise", "--workers", ",".join(names)]
        _, ref = _spawn(
            argv,
            state_dir / "logs" / "supervisor.log",
            {**os.environ, **(env or {}), "TICKFORGE_STATE_DIR": str(state_dir)},
        )
        _write_json(_supervisor_file(state_dir), {"pid": ref.pid, "start_time": ref.start_time})
    else:
        names = list(_read_json(_workers_file(state_dir)).get("workers", {})) or names
    deadline = time.monotonic() + timeout
    while True:
        workers = status(state_dir)["workers"]
        if set(names) <= set(workers) and all(workers[n]["pid"] for n in names):
            return {n: w["pid"] for n, w in workers.items()}
        if time.monotonic() > deadline or _supervisor_ref(state_dir) is None:
            raise RuntimeError(f"the supervisor did not start the workers; see {state_dir / 'logs' / 'supervisor.log'}")
        time.sleep(0.1)


def status(state_dir: Path | None = None) -> dict:
    """The supervisor and each worker: pid, running (checked now), uptime, restarts, last exit,
    health, the age of its liveness timestamp and its ports."""
    state_dir = state_dir or state_dir_from_env()
    supervisor = _read_json(_supervisor_file(state_dir))
    out = {
        "supervisor": {"pid": supervisor.get("pid"), "running": _supervisor_ref(state_dir) is not None},
        "workers": {},
    }
    now = time.time()
    for name, entry in _read_json(_workers_file(state_dir)).get("workers", {}).items():
        if not isinstance(entry, dict):
            continue
        ref = _ref(entry)
        liveness, started_at = entry.get("liveness"), entry.get("started_at")
        running = ref is not None and is_alive(ref)
        out["workers"][name] = {
            "pid": entry.get("pid"),
            "running": running,
            "uptime_s": round(now - started_at, 1) if running and started_at else None,
            "restarts": entry.get("restarts", 0),
            "last_exit": entry.get("last_exit"),
            "healthy": entry.get("healthy"),
            "liveness_age_s": None if liveness is None else round(now - liveness, 1),
            "metrics_port": entry.get("metrics_port"),
            "http_port": entry.get("http_port"),
        }
    return out


def stop(state_dir: Path | None = None, timeout: float = 30.0) -> list[str]:
    """Stop the supervisor and every worker (their whole process groups); returns the workers
    that were running."""
    state_dir = state_dir or state_dir_from_env()
    running = [name for name, w in status(state_dir)["workers"].items() if w["running"]]
    supervisor = _supervisor_ref(state_dir)
    if supervisor is not None:
        send_signal(supervisor, signal.SIGTERM, group=False)
        deadline = time.monotonic() + timeout
        while is_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_alive(supervisor):
            kill_group(supervisor)
    # Whatever a dead (or killed) supervisor left behind: running workers, and the children of
    # any that died while nothing watched it.
    left = [ref for entry in _read_json(_workers_file(state_dir)).get("workers", {}).values() if (ref := _ref(entry))]
    _terminate(*(ref for ref in left if is_alive(ref)))
    for ref in left:
        kill_group(ref)
    _supervisor_file(state_dir).unlink(missing_ok=True)
    _workers_file(state_dir).unlink(missing_ok=True)
    return running
