"""PostgreSQL: a private cluster in the state folder, run from the machine's server binaries.

Trust authentication, TCP on 127.0.0.1 only, no Unix socket (its path would depend on the state
dir's length and permissions). PostgreSQL refuses to run as root, so as root the cluster belongs
to and runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tickforge.platform.io.postgres import apply_migrations
from tickforge.platform.stack.base import Launch, Service, ServiceContext, StackError
from tickforge.platform.stack.process import LOCALHOST, run_checked

DATABASE = "tickforge"
SUPERUSER = "postgres"
RUN_AS_WHEN_ROOT = "postgres"
PG_HELP = "PostgreSQL needs its server binaries (initdb, postgres): apt-get install postgresql-15"


def find_bindir(debian_root: Path = Path("/usr/lib/postgresql")) -> Path:
    """Newest ``/usr/lib/postgresql/<major>/bin`` (Debian keeps them off PATH), else PATH."""
    majors = sorted(
        (p for p in debian_root.glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
        reverse=True,
    )
    on_path = shutil.which("initdb")
    for bindir in [*majors, *([Path(on_path).parent] if on_path else [])]:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise StackError(PG_HELP)


def run_as_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS_WHEN_ROOT)
    except KeyError:
        raise StackError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as: "
            "apt-get install postgresql-15 (creates it) or run the stack as a regular user"
        ) from None
    return RUN_AS_WHEN_ROOT


def first_blocking_dir(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first folder on the way to ``path`` that ``uid`` may not enter (search permission)."""
    for folder in [*reversed(path.parents), path]:
        st = folder.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


def _check_reachable(folder: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    gids = {entry.pw_gid, *os.getgrouplist(user, entry.pw_gid)}
    blocked = first_blocking_dir(folder, entry.pw_uid, gids)
    if blocked is not None:
        raise StackError(
            f"PostgreSQL runs as user {user}, which may not enter {blocked} "
            f"(mode {stat.filemode(blocked.stat().st_mode)}): chmod o+x {blocked}, "
            "or use a state dir it can reach"
        )


def dsn_for(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{SUPERUSER}@{LOCALHOST}:{port}/{database}"


class PostgresService(Service):
    name = "postgres"
    port_keys = ("postgres",)
    start_timeout = 30.0
    # SIGINT is PostgreSQL's "fast" shutdown: roll back, disconnect clients, checkpoint. Sent to
    # the postmaster only, which stops its own children in order.
    stop_signal = signal.SIGINT
    signal_group = False

    def __init__(self) -> None:
        self._bindir: Path | None = None

    def check_prerequisites(self) -> None:
        self._bindir = find_bindir()
        run_as_user()

    def prepare(self, ctx: ServiceContext) -> Launch:
        bindir = self._bindir or find_bindir()
        user = run_as_user()
        data = ctx.home / "data"
        ctx.home.mkdir(parents=True, exist_ok=True)
        if not (data / "PG_VERSION").exists():
            # Nothing usable yet (or an interrupted initdb): initialise from scratch.
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(mode=0o700)
            if user is not None:
                _check_reachable(ctx.home, user)
                shutil.chown(data, user, user)
            run_checked(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    # A throwaway-style cluster: skip fsync of the fresh files (~1 s on ext4).
                    "--no-sync",
                    "--no-instructions",
                ],
                what="initdb",
                cwd=data,
                user=user,
            )
        return Launch(
            argv=[
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(ctx.ports["postgres"]),
                "-c",
                f"listen_addresses={LOCALHOST}",
                "-c",
                "unix_socket_directories=",
            ],
            cwd=data,
            user=user,
        )

    def ready(self, ctx: ServiceContext) -> bool:
        with psycopg.connect(dsn_for(ctx.ports["postgres"], "postgres"), connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def after_start(self, ctx: ServiceContext) -> None:
        port = ctx.ports["postgres"]
        with psycopg.connect(dsn_for(port, "postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        apply_migrations(dsn_for(port), ctx.settings.postgres.schema_name, ctx.settings.streaming.timeframes)

    def endpoint(self, ctx: ServiceContext) -> dict[str, Any]:
        port = ctx.ports["postgres"]
        return {"dsn": dsn_for(port), "port": port, "database": DATABASE, "user": SUPERUSER}

    @classmethod
    def env_vars(cls, endpoint: Mapping[str, Any]) -> dict[str, str]:
        return {"TICKFORGE_POSTGRES__DSN": str(endpoint["dsn"])}
