"""What every local-stack service provides to the launcher."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tickforge.platform.settings import Settings


class StackError(RuntimeError):
    """A service could not be prepared, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class ServiceContext:
    """Where one service keeps its files, which ports it got, and the platform's settings."""

    home: Path  # <state_dir>/<service>: data and rendered config
    log_path: Path  # <state_dir>/logs/<service>.log
    ports: Mapping[str, int]
    settings: Settings


@dataclass(frozen=True)
class Launch:
    """How to run the service's long-lived process."""

    argv: list[str]
    cwd: Path
    user: str | None = None  # run as this user (only when we are root)


class Service(ABC):
    name: ClassVar[str]
    # Keys into the stack's port table; the first one is the client port.
    port_keys: ClassVar[tuple[str, ...]]
    start_timeout: ClassVar[float] = 60.0
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    # Signal the whole process group (the service and any helpers it spawned) or the leader only.
    signal_group: ClassVar[bool] = True
    stop_timeout: ClassVar[float] = 20.0

    def check_prerequisites(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Raise StackError naming what to install when a needed program is missing."""

    @abstractmethod
    def prepare(self, ctx: ServiceContext) -> Launch:
        """Idempotent first-run setup (fetch, format, init), then the command to run."""

    @abstractmethod
    def ready(self, ctx: ServiceContext) -> bool:
        """One quick readiness probe; raising counts as not ready."""

    def after_start(self, ctx: ServiceContext) -> None:  # noqa: B027 - an optional hook, empty by default
        """Idempotent provisioning once ready (buckets, databases, migrations)."""

    @abstractmethod
    def endpoint(self, ctx: ServiceContext) -> dict[str, Any]:
        """Connection facts for ``status`` (local fake credentials included)."""

    @classmethod
    @abstractmethod
    def env_vars(cls, endpoint: Mapping[str, Any]) -> dict[str, str]:
        """The ``TICKFORGE_*`` variables that point Settings at this endpoint."""

    def kept_on_wipe(self, ctx: ServiceContext) -> list[Path]:
        """Paths under the state dir that ``down --wipe`` must keep (caches)."""
        return []
