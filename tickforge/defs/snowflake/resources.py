"""The Snowflake resource. A Snowflake account is used as is; when ``settings.snowflake.host`` is
set (the local fakesnow stand-in), host/port/protocol go through
``additional_snowflake_connection_args``."""

from __future__ import annotations

from typing import Any

from dagster_snowflake import SnowflakeResource

from tickforge.defs.lib.secrets import secret
from tickforge.platform.settings import Settings


def snowflake_resource(settings: Settings, env_secrets: bool = True) -> SnowflakeResource:
    sf = settings.snowflake
    extra: dict[str, Any] = {}
    if sf.host is not None:
        # The local stand-in (fakesnow over HTTP): endpoint, no telemetry, fail fast.
        extra = {
            "host": sf.host,
            "port": sf.port,
            "protocol": sf.protocol or "http",
            "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        }
    return SnowflakeResource(
        account=sf.account,
        user=sf.user,
        password=secret(sf.password.get_secret_value(), "TICKFORGE_SNOWFLAKE__PASSWORD", env_secrets),
        database=sf.database,
        warehouse=sf.warehouse,
        role=sf.role,
        network_timeout=15 if sf.host is not None else None,
        additional_snowflake_connection_args=extra or None,
    )
