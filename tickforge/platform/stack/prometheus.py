"""Prometheus: Debian's ``prometheus`` binary, scraping what a target file lists.

The scrape targets come from file-based service discovery: ``<state_dir>/prometheus/targets/*.json``,
which :func:`write_targets` rewrites whenever the worker supervisor (re)starts a worker on a new
metrics port. Prometheus watches the folder, so a restarted worker is scraped without a reload.
Data lives in ``<state_dir>/prometheus/data``; the web UI and HTTP API bind 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tickforge.platform.stack.base import Launch, Service, ServiceContext, StackError
from tickforge.platform.stack.process import LOCALHOST

BINARY_ENV = "TICKFORGE_PROMETHEUS_BIN"
DEBIAN_BINARY = Path("/usr/bin/prometheus")
INSTALL_HINT = "Prometheus is missing: apt-get install prometheus (or set TICKFORGE_PROMETHEUS_BIN)"
JOB = "tickforge"
DEFAULT_SCRAPE_INTERVAL_S = 5.0
TARGETS_DIR = Path("prometheus") / "targets"  # under the state dir
RETENTION = "15d"
RETENTION_SIZE = "1GB"  # the state folder stays bounded on a laptop left running


def find_binary(environ: Mapping[str, str] = os.environ, debian_binary: Path = DEBIAN_BINARY) -> Path:
    """``TICKFORGE_PROMETHEUS_BIN``, else ``prometheus`` on PATH, else Debian's /usr/bin/prometheus."""
    configured = environ.get(BINARY_ENV)
    candidates = [Path(configured)] if configured else []
    on_path = shutil.which("prometheus", path=environ.get("PATH", os.defpath))
    candidates += [Path(on_path)] if on_path else []
    candidates.append(debian_binary)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise StackError(INSTALL_HINT)


def targets_dir(state_dir: Path) -> Path:
    return state_dir / TARGETS_DIR


def target_groups(ports: Mapping[str, int], host: str = LOCALHOST) -> list[dict[str, Any]]:
    """file_sd target groups: one per service, labelled ``service=<name>`` (not ``worker``, which
    the workers' own series carry: a target label of that name would rename theirs). ``instance``
    is the name too, not host:port: a restarted worker gets a new metrics port, and its series must
    go on (``changes(process_start_time_seconds[1h])`` counts its restarts)."""
    groups = []
    for name, port in sorted(ports.items()):
        if not 0 < port < 65536:
            raise ValueError(f"{name}: metrics port {port} is not a TCP port")
        groups.append({"targets": [f"{host}:{port}"], "labels": {"service": name, "instance": name}})
    return groups


def write_targets(state_dir: Path, ports: Mapping[str, int], group: str = "workers") -> bool:
    """Write ``<state_dir>/prometheus/targets/<group>.json`` listing ``{service: metrics port}``;
    returns whether it changed. Cheap when nothing changed (no write), so the supervisor may call
    it on every round. Atomic: Prometheus never reads half a file."""
    folder = targets_dir(state_dir)
    path = folder / f"{group}.json"
    text = json.dumps(target_groups(ports), indent=2) + "\n"
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.json: outside the file_sd glob
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def read_targets(state_dir: Path, group: str = "workers") -> dict[str, int]:
    """``{service: port}`` of a target file written by :func:`write_targets` (empty when absent)."""
    try:
        groups = json.loads((targets_dir(state_dir) / f"{group}.json").read_text())
    except FileNotFoundError:
        return {}
    return {g["labels"]["service"]: int(g["targets"][0].rsplit(":", 1)[1]) for g in groups}


def render_config(*, port: int, targets: Path, scrape_interval_s: float) -> str:
    """prometheus.yml: the tickforge job from the target files, and Prometheus itself."""
    interval = f"{scrape_interval_s:g}s"
    config = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "scrape_timeout": f"{min(scrape_interval_s, 10.0):g}s",
        },
        "scrape_configs": [
            {
                "job_name": JOB,
                # inotify picks changes up at once; the refresh is the fallback.
                "file_sd_configs": [{"files": [str(targets / "*.json")], "refresh_interval": "5s"}],
            },
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{LOCALHOST}:{port}"]}]},
        ],
    }
    # JSON is YAML: no YAML writer needed for a config this small.
    return json.dumps(config, indent=2) + "\n"


class PrometheusService(Service):
    name = "prometheus"
    port_keys = ("prometheus",)
    start_timeout = 30.0
    stop_timeout = 20.0  # SIGTERM: it flushes the head block's WAL, usually well under a second

    def __init__(self, scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S) -> None:
        if scrape_interval_s <= 0:
            raise ValueError(f"scrape interval must be positive, not {scrape_interval_s}")
        self.scrape_interval_s = scrape_interval_s
        self._binary: Path | None = None

    def check_prerequisites(self) -> None:
        self._binary = find_binary()

    def prepare(self, ctx: ServiceContext) -> Launch:
        binary = self._binary or find_binary()
        data = ctx.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        targets = ctx.home / "targets"
        targets.mkdir(parents=True, exist_ok=True)
        config = ctx.home / "prometheus.yml"
        port = ctx.ports["prometheus"]
        config.write_text(render_config(port=port, targets=targets, scrape_interval_s=self.scrape_interval_s))
        return Launch(
            argv=[
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address={LOCALHOST}:{port}",
                f"--storage.tsdb.retention.time={RETENTION}",
                f"--storage.tsdb.retention.size={RETENTION_SIZE}",
                "--log.level=warn",
            ],
            cwd=ctx.home,
        )

    def ready(self, ctx: ServiceContext) -> bool:
        url = f"http://{LOCALHOST}:{ctx.ports['prometheus']}/-/ready"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def endpoint(self, ctx: ServiceContext) -> dict[str, Any]:
        port = ctx.ports["prometheus"]
        return {"url": f"http://{LOCALHOST}:{port}", "port": port, "targets": str(ctx.home / "targets")}

    @classmethod
    def env_vars(cls, endpoint: Mapping[str, Any]) -> dict[str, str]:
        return {}  # nothing in Settings points at Prometheus: it pulls, nobody pushes to it
