"""Snowflake: fakesnow's HTTP server, reached by the real ``snowflake-connector-python``.

Databases persist under ``<state_dir>/snowflake/db`` (see ``snowflake_server``). The server
accepts any credentials; the fixed fake ones below make clients look like real ones.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from tickforge.platform.settings import SnowflakeSettings
from tickforge.platform.stack.base import Launch, Service, ServiceContext
from tickforge.platform.stack.process import LOCALHOST, port_accepts

ACCOUNT = "fakesnow"
USER = "fake"
PASSWORD = "snow"
PROTOCOL = "http"


def connect_args(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    """``snowflake.connector.connect`` arguments for a stack endpoint: the very ones clients get
    from Settings once ``stack.env`` is loaded."""
    keys = ("account", "user", "password", "database", "host", "port", "protocol")
    return SnowflakeSettings(**{key: endpoint[key] for key in keys}).connect_args()


class SnowflakeService(Service):
    name = "snowflake"
    port_keys = ("snowflake",)
    start_timeout = 60.0

    def prepare(self, ctx: ServiceContext) -> Launch:
        db_path = ctx.home / "db"
        db_path.mkdir(parents=True, exist_ok=True)
        return Launch(
            argv=[
                sys.executable,
                "-m",
                "tickforge.platform.stack.snowflake_server",
                "--host",
                LOCALHOST,
                "--port",
                str(ctx.ports["snowflake"]),
                "--db-path",
                str(db_path),
            ],
            cwd=ctx.home,
        )

    def ready(self, ctx: ServiceContext) -> bool:
        if not port_accepts(ctx.ports["snowflake"]):
            return False
        # A real login and query, which also creates the settings' database on first start.
        import snowflake.connector  # 0.5 s import, only needed here

        with snowflake.connector.connect(**connect_args(self.endpoint(ctx))) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)

    def endpoint(self, ctx: ServiceContext) -> dict[str, Any]:
        return {
            "host": LOCALHOST,
            "port": ctx.ports["snowflake"],
            "protocol": PROTOCOL,
            "account": ACCOUNT,
            "user": USER,
            "password": PASSWORD,
            "database": ctx.settings.snowflake.database,
        }

    @classmethod
    def env_vars(cls, endpoint: Mapping[str, Any]) -> dict[str, str]:
        keys = ("host", "port", "protocol", "account", "user", "password", "database")
        return {f"TICKFORGE_SNOWFLAKE__{key.upper()}": str(endpoint[key]) for key in keys}
