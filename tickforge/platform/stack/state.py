"""The stack's files in its state folder: ``stack.json`` (pids and ports), ``stack.env`` (endpoints
for Settings), the lock that serialises ``up``/``down``, and ``--wipe``."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tickforge.platform.stack.process import ProcessRef

STATE_FILE = "stack.json"
ENV_FILE = "stack.env"
LOCK_FILE = "stack.lock"


@dataclass
class ServiceRecord:
    """What ``stack.json`` remembers of one service. Ports stay after ``down`` so the next ``up``
    reuses them and endpoints remain stable."""

    ports: dict[str, int] = field(default_factory=dict)
    pid: int | None = None
    start_time: int | None = None  # kernel start time of pid, see process.ProcessRef

    def process(self) -> ProcessRef | None:
        if self.pid is None or self.start_time is None:
            return None
        return ProcessRef(self.pid, self.start_time)


def load_records(state_dir: Path) -> dict[str, ServiceRecord]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {name: ServiceRecord(**rec) for name, rec in raw.get("services", {}).items()}


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def save_records(state_dir: Path, records: Mapping[str, ServiceRecord]) -> None:
    payload = {"services": {name: asdict(rec) for name, rec in sorted(records.items())}}
    _write_atomic(state_dir / STATE_FILE, json.dumps(payload, indent=2) + "\n")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: concurrent ``up``/``down`` calls (parallel test workers, two
    terminals) take turns instead of starting a service twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _env_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_env_file(env: Mapping[str, str]) -> str:
    """dotenv text for pydantic-settings (python-dotenv): one ``KEY="value"`` a line."""
    lines = [
        "# Written by `tickforge stack up`: endpoints of the running local stack (local fake",
        "# credentials only). Removed by `tickforge stack down`.",
    ]
    lines += [f"{key}={_env_quote(value)}" for key, value in sorted(env.items())]
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    # 0600: it holds (fake, local) passwords, and habits around credential files should not vary.
    _write_atomic(path, render_env_file(env), mode=0o600)


def wipe(state_dir: Path, keep: Iterable[Path]) -> None:
    """Delete everything under ``state_dir`` except the ``keep`` paths (and the folders leading
    to them)."""
    keep_resolved = [p.resolve() for p in keep]

    def leads_to_kept(path: Path) -> bool:
        return any(k == path or path in k.parents for k in keep_resolved)

    def clear(folder: Path) -> None:
        for entry in folder.iterdir():
            resolved = entry.resolve()
            if resolved in keep_resolved:
                continue
            if leads_to_kept(resolved) and entry.is_dir() and not entry.is_symlink():
                clear(entry)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    if state_dir.exists():
        clear(state_dir)
