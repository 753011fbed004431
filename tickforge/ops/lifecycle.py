"""``tickforge up | down | status | logs``: the whole platform on this machine.

``up`` starts the local stack with Prometheus (reusing healthy running services), applies the
topics, runs every registry entry (the workers, the live view, ``dagster dev``) under the worker
supervisor, and waits until each is healthy: a worker's loop has run (its liveness gauge), a web
UI answers its health path. ``<state>/platform.json`` records which stack services ``up`` started,
so ``down`` stops exactly those (services that were running before are left running) and keeps
every service's data unless ``wipe``. Logs: ``<state>/logs/<service>.log``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tickforge.platform.stack.process import LOCALHOST
from tickforge.streaming import registry, supervisor

PLATFORM_FILE = "platform.json"
STARTED_KEY = "stack_services_started"  # in PLATFORM_FILE: the stack services `up` started
HEALTH_TIMEOUT_S = 300.0
SUPERVISOR = "supervisor"


class PlatformError(RuntimeError):
    """The platform did not come up (the message names what and its log)."""


def _log_path(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def _stack(state_dir: Path, with_prometheus: bool = True) -> Any:
    from tickforge.platform.stack.launcher import LocalStack

    return LocalStack(state_dir=state_dir, with_prometheus=with_prometheus)


def _use_state_dir(state_dir: Path) -> Path:
    """This process and everything it starts read the settings of ``state_dir``'s stack."""
    state_dir = state_dir.resolve()
    os.environ["TICKFORGE_STATE_DIR"] = str(state_dir)
    return state_dir


def web_url(spec: registry.WorkerSpec, entry: dict[str, Any]) -> str | None:
    port = entry.get("http_port")
    return f"http://{LOCALHOST}:{port}" if spec.http_port is not None and port else None


def _ready(spec: registry.WorkerSpec, entry: dict[str, Any], liveness_timeout_s: float) -> bool:
    from tickforge.ops.probes import http_ok

    if not entry.get("running"):
        return False
    if spec.metrics:
        age = entry.get("liveness_age_s")
        return bool(entry.get("healthy")) and age is not None and age <= liveness_timeout_s
    url = web_url(spec, entry)
    return url is None or http_ok(url + spec.health_path, timeout=2)


def up(
    state_dir: Path,
    *,
    with_prometheus: bool = True,
    timeout: float = HEALTH_TIMEOUT_S,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, str]:
    """Start everything and wait until it is healthy; returns name -> URL of what has one."""
    from tickforge.platform.io.kafka import apply_topics
    from tickforge.platform.settings import load_settings
    from tickforge.platform.stack.launcher import UpEvent, endpoints_env

    state_dir = _use_state_dir(state_dir)
    record = _read_record(state_dir)
    stack = _stack(state_dir, with_prometheus)

    def on_event(event: UpEvent) -> None:
        if event.action != "reused":
            record[STARTED_KEY] = sorted({*record.get(STARTED_KEY, []), event.service})
        progress(f"{event.service:<16} {event.action} in {event.seconds:.1f} s")

    try:
        status = stack.up(progress=on_event)
    finally:
        _write_record(state_dir, record)
    env = {**endpoints_env(status), "TICKFORGE_STATE_DIR": str(state_dir)}
    os.environ.update(env)
    settings = load_settings()
    apply_topics(settings)
    progress(f"{'topics':<16} applied")
    names = registry.names(default_only=False)
    running = supervisor.start(names, env=env, state_dir=state_dir)
    if missing := [n for n in names if n not in running]:
        # A supervisor started by `stream start` (or the demo) runs another set: it is not adopted.
        raise PlatformError(f"a supervisor runs here without {', '.join(missing)}: `tickforge stream stop` it first")
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        workers = supervisor.status(state_dir)["workers"]
        for name in list(pending):
            if _ready(registry.worker(name), workers.get(name, {}), settings.streaming.liveness_timeout_s):
                pending.remove(name)
                progress(f"{name:<16} healthy (pid {workers[name]['pid']})")
        if pending and time.monotonic() > deadline:
            logs = ", ".join(str(_log_path(state_dir, n)) for n in pending)
            raise PlatformError(f"not healthy within {timeout:.0f} s: {', '.join(pending)}; see {logs}")
        if pending and not supervisor.status(state_dir)["supervisor"]["running"]:
            raise PlatformError(f"the supervisor exited; see {_log_path(state_dir, SUPERVISOR)}")
        if pending:
            time.sleep(0.5)
    return urls(state_dir)


def urls(state_dir: Path) -> dict[str, str]:
    """Where to look: each web UI under the supervisor, and Prometheus."""
    out: dict[str, str] = {}
    workers = supervisor.status(state_dir)["workers"]
    for spec in registry.WORKERS:
        url = web_url(spec, workers.get(spec.name, {}))
        if url:
            out[spec.name] = url
    prometheus = _stack(state_dir).status().get("prometheus", {})
    if prometheus.get("running") and prometheus.get("url"):
        out["prometheus"] = str(prometheus["url"])
    return out


def started_services(record: dict[str, Any]) -> list[str] | None:
    """The stack services ``up`` started, from its record (None: every one, as a record of an
    older ``up`` that only noted whether it started any says)."""
    if record.get("stack_started"):
        return None
    return [str(name) for name in record.get(STARTED_KEY, [])]


def down(state_dir: Path, wipe: bool = False) -> dict[str, Any]:
    """Stop the workers and services, and the stack services ``up`` started (all of them when
    ``wipe`` asks to delete their data); returns what was stopped."""
    state_dir = _use_state_dir(state_dir)
    stopped_workers = supervisor.stop(state_dir)
    services = None if wipe else started_services(_read_record(state_dir))
    stack = _stack(state_dir)
    stack_stopped = stack.down(wipe=wipe, services=services) if services is None or services else {}
    stack_left = any(entry.get("running") for entry in stack.status().values())
    (state_dir / PLATFORM_FILE).unlink(missing_ok=True)
    return {"workers": stopped_workers, "stack": stack_stopped, "stack_left_running": stack_left, "wiped": wipe}


def _read_record(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / PLATFORM_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(state_dir: Path, record: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / PLATFORM_FILE).write_text(json.dumps(record, indent=2) + "\n")


# ---- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    """One row of ``tickforge status``."""

    service: str
    kind: str  # stack, supervisor, worker or service (a registry entry that consumes nothing)
    running: bool
    pid: int | None
    uptime_s: float | None
    restarts: int | None
    lag: int | None  # messages its consumer group is behind (None: consumes nothing, or unknown)
    last_error: str | None
    url: str | None = None


def _clock_ticks_uptime_s(pid: int) -> float | None:
    """Seconds since the process started (from its start time in clock ticks after boot)."""
    from tickforge.platform.stack.process import process_start_time

    start = process_start_time(pid)
    if start is None:
        return None
    boot_uptime = float(Path("/proc/uptime").read_text().split()[0])
    return round(boot_uptime - start / os.sysconf("SC_CLK_TCK"), 1)


_EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b.*")


def last_error_line(log_path: Path, tail_bytes: int = 65_536) -> str | None:
    """The latest error in a log: a JSON line at level error or critical (its message), or the
    closing line of a Python traceback."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - tail_bytes))
            lines = handle.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("{"):
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and str(entry.get("level", "")).lower() in ("error", "critical"):
                return str(entry.get("msg", text))
        elif _EXCEPTION_LINE.match(text):
            return text
    return None


def status(state_dir: Path, with_lag: bool = True) -> list[ServiceStatus]:
    """Every service of the stack, the supervisor, and every registry entry it runs."""
    state_dir = _use_state_dir(state_dir)
    rows: list[ServiceStatus] = []
    for name, entry in _stack(state_dir).status().items():
        pid = entry.get("pid")
        rows.append(
            ServiceStatus(
                name,
                "stack",
                bool(entry.get("running")),
                pid,
                _clock_ticks_uptime_s(pid) if pid else None,
                None,
                None,
                None if entry.get("running") else last_error_line(_log_path(state_dir, name)),
                entry.get("url"),
            )
        )
    current = supervisor.status(state_dir)
    sup = current["supervisor"]
    sup_pid = sup["pid"] if sup["running"] else None
    rows.append(
        ServiceStatus(
            SUPERVISOR,
            SUPERVISOR,
            sup["running"],
            sup_pid,
            _clock_ticks_uptime_s(sup_pid) if sup_pid else None,
            None,
            None,
            None,
        )
    )
    lags = _lags() if with_lag and current["workers"] else {}
    for spec in registry.WORKERS:
        entry = current["workers"].get(spec.name)
        if entry is None:
            continue
        error = entry.get("last_exit") if entry.get("last_exit") not in (None, "stopped") else None
        if entry.get("healthy") is False:
            error = "unhealthy"
        logged = last_error_line(_log_path(state_dir, spec.name))
        if logged and logged != error:
            error = f"{error}; {logged}" if error else logged
        rows.append(
            ServiceStatus(
                spec.name,
                "worker" if spec.consumes else "service",
                entry["running"],
                entry["pid"] if entry["running"] else None,
                entry.get("uptime_s"),
                entry.get("restarts"),
                lags.get(spec.name),
                error,
                web_url(spec, entry),
            )
        )
    return rows


def _lags() -> dict[str, int]:
    """Consumer lag per consuming registry entry; empty when Kafka does not answer."""
    from confluent_kafka import KafkaException

    from tickforge.ops.probes import consumer_lag
    from tickforge.platform.settings import load_settings

    try:
        return {name: lag.behind for name, lag in consumer_lag(load_settings(), registry.consuming()).items()}
    except KafkaException:
        return {}


def status_rows_json(rows: list[ServiceStatus]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def format_status(rows: list[ServiceStatus]) -> str:
    """The status as one table."""

    def cell(value: object, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value)

    header = f"{'SERVICE':<17} {'STATE':<8} {'PID':>7} {'UPTIME':>9} {'RESTARTS':>8} {'LAG':>9}  LAST ERROR"
    lines = [header]
    for row in rows:
        state = "running" if row.running else "stopped"
        uptime = None if row.uptime_s is None else _duration(row.uptime_s)
        error = (row.last_error or "-")[:70]
        lines.append(
            f"{row.service:<17} {state:<8} {cell(row.pid):>7} {cell(uptime):>9} "
            f"{cell(row.restarts):>8} {cell(row.lag):>9}  {error}"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---- logs ------------------------------------------------------------------------------------


def log_names(state_dir: Path) -> list[str]:
    from tickforge.platform.stack.launcher import SERVICE_CLASSES

    return [*SERVICE_CLASSES, SUPERVISOR, *registry.names(default_only=False)]


def log_file(state_dir: Path, name: str) -> Path:
    known = log_names(state_dir)
    if name not in known:
        raise ValueError(f"unknown service {name!r}; known: {', '.join(known)}")
    return _log_path(state_dir.resolve(), name)


def read_log(path: Path, lines: int, follow: bool, poll_s: float = 0.5) -> Iterator[str]:
    """The last ``lines`` lines of a log, then (``follow``) what is appended, until interrupted."""
    if not path.exists() and not follow:
        raise FileNotFoundError(f"no log yet at {path}")
    offset = 0
    if path.exists():
        data = path.read_bytes()
        yield from data.decode(errors="replace").splitlines(keepends=True)[-lines:] if lines > 0 else []
        offset = len(data)
    while follow:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < offset:  # truncated or replaced (``down --wipe``): from its start
            offset = 0
        if size > offset:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            yield chunk.decode(errors="replace")
        else:
            time.sleep(poll_s)


# ---- dagster dev -----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def dagster_home(state_dir: Path) -> Path:
    """``<state>/dagster``: the repository's instance config (runs and events in the stack's
    PostgreSQL) with its local files (compute logs, artifacts) under the state folder."""
    home = state_dir.resolve() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    template = (REPO / "dagster.yaml").read_text()
    if ".dagster_home/" not in template:
        raise PlatformError(f"{REPO / 'dagster.yaml'} no longer keeps its files under .dagster_home/")
    config = template.replace(".dagster_home/", f"{home}/")
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != config:
        target.write_text(config)
    return home


def dagster_dev_argv(host: str, port: int) -> list[str]:
    import sys

    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "dev", "-h", host, "-p", str(port), "-w", str(REPO / "workspace.yaml")]
