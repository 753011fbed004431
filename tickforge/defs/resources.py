"""Every resource of the code location, built from :class:`tickforge.platform.settings.Settings`.

Each integration builds its own in its ``resources.py``; this gathers them for code that uses
resources outside a Dagster run (tests, benchmarks, the CLI). The local stack and production
differ in configuration (endpoints, credentials), never in code.
"""

from __future__ import annotations

from typing import Any

from tickforge.defs.postgres.resources import postgres_resource
from tickforge.defs.s3.resources import object_store_resource
from tickforge.defs.snowflake.resources import snowflake_resource
from tickforge.defs.streaming.resources import kafka_resource
from tickforge.platform.settings import Settings


def resources_for(settings: Settings, *, env_secrets: bool = True) -> dict[str, Any]:
    """The resources of the code location, for the deployment ``settings`` describe.

    ``env_secrets=False`` gives plain values, for using a resource directly outside Dagster
    (an ``EnvVar`` is only resolved when Dagster initialises the resource).
    """
    return {
        "postgres": postgres_resource(settings, env_secrets),
        "object_store": object_store_resource(settings, env_secrets),
        "snowflake": snowflake_resource(settings, env_secrets),
        "kafka": kafka_resource(settings),
    }
