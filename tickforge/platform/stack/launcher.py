"""``LocalStack``: start, reuse, report and stop the local services as detached processes.

State lives in one folder (``TICKFORGE_STATE_DIR``, default ``.tickforge``): ``stack.json``
(pids and ports), ``stack.env`` (endpoints for Settings), ``logs/<service>.log`` and one data
folder per service.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tickforge.platform.settings import Settings, load_settings, state_dir_from_env
from tickforge.platform.stack.base import Service, ServiceContext, StackError
from tickforge.platform.stack.kafka import KafkaService
from tickforge.platform.stack.postgres import PostgresService
from tickforge.platform.stack.process import (
    ProcessRef,
    any_free_port,
    is_alive,
    kill_group,
    listens_on,
    log_tail,
    port_accepts,
    port_is_free,
    probe_ok,
    send_signal,
    spawn,
)
from tickforge.platform.stack.prometheus import DEFAULT_SCRAPE_INTERVAL_S, PrometheusService
from tickforge.platform.stack.s3 import S3Service
from tickforge.platform.stack.snowflake import SnowflakeService
from tickforge.platform.stack.state import (
    ENV_FILE,
    LOCK_FILE,
    ServiceRecord,
    file_lock,
    load_records,
    save_records,
    write_env_file,
)
from tickforge.platform.stack.state import wipe as wipe_state

log = logging.getLogger(__name__)

SERVICE_CLASSES: dict[str, type[Service]] = {
    "kafka": KafkaService,
    "postgres": PostgresService,
    "s3": S3Service,
    "snowflake": SnowflakeService,
    "prometheus": PrometheusService,
}
# Started only when asked for (``with_prometheus``); stopped by every ``down`` once started.
OPTIONAL_SERVICES = frozenset({"prometheus"})
# 55432, not 5432: a system PostgreSQL may own the usual port. 9000, not S3Proxy's 8080 (often
# taken by other dev servers). A taken default falls back to a free port.
DEFAULT_PORTS: dict[str, int] = {
    "kafka": 9092,
    "kafka_controller": 9093,
    "postgres": 55432,
    "s3": 9000,
    "snowflake": 8765,
    "prometheus": 9090,
}
KAFKA_LIB_ENV = "TICKFORGE_KAFKA_LIB_CACHE"
S3_LIB_ENV = "TICKFORGE_S3_LIB_CACHE"
REUSE_PROBE_SECONDS = 10.0
SIGKILL_GRACE_SECONDS = 5.0

# A service's status entry: {"running": bool, "pid": int | None, "log": str, **endpoint}.
Status = dict[str, dict[str, Any]]


def port_env_var(key: str) -> str:
    """``kafka_controller`` -> ``TICKFORGE_STACK_KAFKA_CONTROLLER_PORT``."""
    return f"TICKFORGE_STACK_{key.upper()}_PORT"


def ports_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    return {key: int(environ[port_env_var(key)]) for key in DEFAULT_PORTS if port_env_var(key) in environ}


def endpoints_env(status: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The ``TICKFORGE_*`` variables (nested with ``__``) of the running services in a status."""
    env: dict[str, str] = {}
    for name, entry in status.items():
        if entry.get("running"):
            env.update(SERVICE_CLASSES[name].env_vars(entry))
    return env


@dataclass(frozen=True)
class UpEvent:
    """What ``up`` did with one service, for progress output."""

    service: str
    action: Literal["started", "restarted", "reused"]
    seconds: float  # setup + boot until healthy + provisioning; reused: health check + provisioning
    setup_seconds: float  # jar resolution, format, initdb (0 when reused)
    entry: dict[str, Any]


class LocalStack:
    """The local services (Kafka, PostgreSQL, S3, Snowflake, and Prometheus with
    ``with_prometheus``) of one state folder.

    Ports, highest priority first: ``ports`` (keys of ``DEFAULT_PORTS``), the
    ``TICKFORGE_STACK_<KEY>_PORT`` variables, the port of the previous run, the default, any
    free port. An explicitly requested port that is taken is an error.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        ports: Mapping[str, int] | None = None,
        *,
        kafka_lib_dir: Path | None = None,
        s3_lib_dir: Path | None = None,
        settings: Settings | None = None,
        with_prometheus: bool = False,
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    ) -> None:
        unknown = set(ports or {}) - set(DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"unknown port keys {sorted(unknown)}; known: {sorted(DEFAULT_PORTS)}")
        self.state_dir = (state_dir or state_dir_from_env()).resolve()
        self.explicit_ports = {**ports_from_env(), **(ports or {})}
        kafka_lib = kafka_lib_dir or self._lib_dir(KAFKA_LIB_ENV, "kafka")
        s3_lib = s3_lib_dir or self._lib_dir(S3_LIB_ENV, "s3")
        self.settings = settings or load_settings()
        self.services: dict[str, Service] = {
            "kafka": KafkaService(kafka_lib.resolve()),
            "postgres": PostgresService(),
            "s3": S3Service(s3_lib.resolve()),
            "snowflake": SnowflakeService(),
            "prometheus": PrometheusService(scrape_interval_s),
        }
        self.with_prometheus = with_prometheus

    def _lib_dir(self, env_var: str, service: str) -> Path:
        """A Java service's jar cache: ``env_var`` if set, else ``<state>/<service>/lib``."""
        cache = os.environ.get(env_var)
        return Path(cache) if cache else self.state_dir / service / "lib"

    @property
    def env_file(self) -> Path:
        return self.state_dir / ENV_FILE

    def _context(self, service: Service, ports: Mapping[str, int]) -> ServiceContext:
        return ServiceContext(
            home=self.state_dir / service.name,
            log_path=self.state_dir / "logs" / f"{service.name}.log",
            ports=dict(ports),
            settings=self.settings,
        )

    def _wanted(self, name: str) -> bool:
        return name not in OPTIONAL_SERVICES or (name == "prometheus" and self.with_prometheus)

    def _select(self, services: Iterable[str] | None) -> list[str]:
        if services is None:
            return [name for name in self.services if self._wanted(name)]
        names = list(services)
        unknown = set(names) - set(self.services)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {list(self.services)}")
        return [name for name in self.services if name in names]

    # ---- up ------------------------------------------------------------------------------

    def up(
        self,
        services: Iterable[str] | None = None,
        progress: Callable[[UpEvent], None] | None = None,
    ) -> Status:
        """Start the services (all by default) that are not already running and healthy, wait
        until each answers, provision them, write ``stack.env``; returns the status."""
        names = self._select(services)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_dir / LOCK_FILE):
            records = load_records(self.state_dir)
            to_start: list[str] = []
            for name in names:
                service, record = self.services[name], records.get(name)
                ref = record.process() if record else None
                t0 = time.monotonic()
                if record and ref and self._healthy(service, ref, record.ports):
                    moved = {k: p for k, p in self.explicit_ports.items() if k in record.ports}
                    if moved and moved != {k: record.ports[k] for k in moved}:
                        log.warning("%s keeps running on %s; `down` it to move it", name, record.ports)
                    ctx = self._context(service, record.ports)
                    service.after_start(ctx)  # idempotent; picks up e.g. new timeframes
                    self._report(progress, name, "reused", t0, 0.0, service.endpoint(ctx), ref)
                    continue
                if ref is not None:
                    # Dead, or alive but not answering: clear it and any children it left.
                    log.warning("%s (pid %d) is not healthy: restarting it", name, ref.pid)
                    self._stop_all({name: ref})
                to_start.append(name)
            # All prerequisites first: a missing JDK must not leave half a stack running.
            for name in to_start:
                self.services[name].check_prerequisites()
            started: dict[str, ProcessRef] = {}
            try:
                self._start(to_start, records, started, progress)
            except BaseException:
                self._stop_all(started)
                for name in started:
                    records[name].pid = records[name].start_time = None
                save_records(self.state_dir, records)
                raise
            status = self._status(records)
            self._write_env(status)
            return status

    def _healthy(self, service: Service, ref: ProcessRef, ports: Mapping[str, int]) -> bool:
        ctx = self._context(service, ports)
        deadline = time.monotonic() + REUSE_PROBE_SECONDS
        while is_alive(ref) and time.monotonic() < deadline:
            if listens_on(ref, ports[service.port_keys[0]]) and probe_ok(partial(service.ready, ctx)):
                return True
            time.sleep(0.2)
        return False

    def _choose_ports(self, service: Service, previous: Mapping[str, int], taken: set[int]) -> dict[str, int]:
        chosen: dict[str, int] = {}
        for key in service.port_keys:
            if key in self.explicit_ports:
                port = self.explicit_ports[key]
                if not port_is_free(port):
                    option = f"--{key.replace('_', '-')}-port"
                    raise StackError(
                        f"{service.name}: port {port} is in use by another process; choose "
                        f"another with {port_env_var(key)} or the {option} option"
                    )
            else:
                candidates = [p for p in (previous.get(key), DEFAULT_PORTS[key]) if p is not None]
                usable = (p for p in candidates if p not in taken and port_is_free(p))
                port = next(usable, None) or any_free_port(taken)
            taken.add(port)
            chosen[key] = port
        return chosen

    def _start(
        self,
        names: list[str],
        records: dict[str, ServiceRecord],
        started: dict[str, ProcessRef],
        progress: Callable[[UpEvent], None] | None,
    ) -> None:
        taken: set[int] = set()
        for record in records.values():
            ref = record.process()
            if ref and is_alive(ref):
                taken.update(record.ports.values())
        booting: dict[str, tuple[ServiceContext, float, float, bool]] = {}
        for name in names:
            service = self.services[name]
            previous = records.get(name, ServiceRecord())
            ctx = self._context(service, self._choose_ports(service, previous.ports, taken))
            t0 = time.monotonic()
            launch = service.prepare(ctx)
            setup = time.monotonic() - t0
            ref = spawn(launch.argv, log_path=ctx.log_path, cwd=launch.cwd, user=launch.user)
            started[name] = ref
            # Recorded at once, so that `down` finds it even if this call fails later.
            records[name] = ServiceRecord(dict(ctx.ports), ref.pid, ref.start_time)
            save_records(self.state_dir, records)
            log.info("%s: pid %d, ports %s, setup %.1f s", name, ref.pid, ctx.ports, setup)
            booting[name] = (ctx, t0, setup, previous.pid is not None)
        # Boot in parallel and probe round-robin, so each service's time is its own.
        while booting:
            for name, (ctx, t0, setup, was_running) in list(booting.items()):
                service, ref = self.services[name], started[name]
                # Ready only when the port answering is this process's (another stack's service may
                # hold it: then this one fails to bind and exits, reported below).
                if listens_on(ref, ctx.ports[service.port_keys[0]]) and probe_ok(partial(service.ready, ctx)):
                    service.after_start(ctx)
                    action: Literal["started", "restarted"] = "restarted" if was_running else "started"
                    self._report(progress, name, action, t0, setup, service.endpoint(ctx), ref)
                    del booting[name]
                elif not is_alive(ref):
                    raise StackError(
                        f"{name} exited while starting; last lines of {ctx.log_path}:\n" + log_tail(ctx.log_path)
                    )
                elif time.monotonic() - t0 - setup > service.start_timeout:
                    raise StackError(
                        f"{name} did not answer within {service.start_timeout:.0f} s; last lines "
                        f"of {ctx.log_path}:\n" + log_tail(ctx.log_path)
                    )
            time.sleep(0.2)

    def _report(
        self,
        progress: Callable[[UpEvent], None] | None,
        name: str,
        action: Literal["started", "restarted", "reused"],
        t0: float,
        setup: float,
        endpoint: dict[str, Any],
        ref: ProcessRef,
    ) -> None:
        seconds = time.monotonic() - t0
        log.info("%s %s in %.1f s (pid %d)", name, action, seconds, ref.pid)
        if progress is not None:
            entry = {"running": True, "pid": ref.pid, **endpoint}
            progress(UpEvent(name, action, seconds, setup, entry))

    def _write_env(self, status: Status) -> None:
        env = endpoints_env(status)
        if env:
            write_env_file(self.env_file, env)
        else:
            self.env_file.unlink(missing_ok=True)

    # ---- status --------------------------------------------------------------------------

    def status(self) -> Status:
        """One entry per service; endpoints only for services that have been started once."""
        return self._status(load_records(self.state_dir))

    def _status(self, records: Mapping[str, ServiceRecord]) -> Status:
        out: Status = {}
        for name, service in self.services.items():
            record = records.get(name)
            if record is None and not self._wanted(name):
                continue  # an optional service never started here is no part of this stack
            ref = record.process() if record else None
            alive = bool(ref and is_alive(ref))
            entry: dict[str, Any] = {"running": False, "pid": ref.pid if ref and alive else None}
            if record and record.ports:
                ctx = self._context(service, record.ports)
                entry["running"] = alive and port_accepts(record.ports[service.port_keys[0]])
                entry.update(service.endpoint(ctx))
            entry["log"] = str(self._context(service, {}).log_path)
            out[name] = entry
        return out

    # ---- down ----------------------------------------------------------------------------

    def down(self, wipe: bool = False, services: Iterable[str] | None = None) -> dict[str, float]:
        """Stop every service this state folder started (only ``services`` when given, keeping
        ``stack.env`` then) and whatever they spawned; remove ``stack.env``. ``wipe`` (of all
        services only) also deletes the services' data, keeping the Kafka jar cache. Returns the
        seconds each running service took to stop."""
        if not self.state_dir.exists():
            return {}
        if wipe and services is not None:
            raise ValueError("wipe deletes every service's data: stop all services with it")
        with file_lock(self.state_dir / LOCK_FILE):
            records = load_records(self.state_dir)
            names = set(records) if services is None else set(services)
            chosen = {name: rec for name, rec in records.items() if name in names}
            refs = {name: r for name, rec in chosen.items() if (r := rec.process()) is not None}
            timings = self._stop_all(refs)
            for record in chosen.values():
                record.pid = record.start_time = None
            save_records(self.state_dir, records)
            if services is None:
                self.env_file.unlink(missing_ok=True)
            else:
                self._write_env(self._status(records))
            if wipe:
                keep = [self.state_dir / LOCK_FILE]
                for service in self.services.values():
                    keep += service.kept_on_wipe(self._context(service, {}))
                wipe_state(self.state_dir, keep)
        return timings

    def _stop_all(self, refs: Mapping[str, ProcessRef]) -> dict[str, float]:
        """Signal all at once (they stop in parallel) and note when each is gone; SIGKILL the
        group of any that overstays its stop timeout. Finally SIGKILL every group, for children
        a service may have orphaned. Returns seconds from the signal until each was gone."""
        t0 = time.monotonic()
        pending = {name: ref for name, ref in refs.items() if is_alive(ref)}
        for name, ref in pending.items():
            service = self.services[name]
            send_signal(ref, service.stop_signal, group=service.signal_group)
        timings: dict[str, float] = {}
        killed: set[str] = set()
        while pending:
            elapsed = time.monotonic() - t0
            for name, ref in list(pending.items()):
                timeout = self.services[name].stop_timeout
                if not is_alive(ref):
                    timings[name] = elapsed
                    del pending[name]
                    log.info("%s stopped in %.1f s", name, elapsed)
                elif name not in killed and elapsed > timeout:
                    log.warning("%s (pid %d) did not stop in time: killing it", name, ref.pid)
                    kill_group(ref)
                    killed.add(name)
                elif elapsed > timeout + SIGKILL_GRACE_SECONDS:
                    raise StackError(f"{name} (pid {ref.pid}) survived SIGKILL")
            time.sleep(0.05)
        for ref in refs.values():
            kill_group(ref)
        return timings
