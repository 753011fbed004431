"""The PostgreSQL resource: the golden bar tables, the alerts and the research tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from dagster import ConfigurableResource
from pydantic import Field

from tickforge.defs.lib.secrets import secret
from tickforge.platform.settings import Settings


class PostgresResource(ConfigurableResource):
    """The PostgreSQL database holding the golden bar tables ``<schema_name>.bars_<tf>``."""

    dsn: str = Field(description="libpq connection string (postgresql://...)")
    schema_name: str = Field(default="tickforge", description="Schema of the golden bar tables")

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A connection; committed on clean exit, rolled back on error, then closed."""
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            yield conn


def postgres_resource(settings: Settings, env_secrets: bool = True) -> PostgresResource:
    return PostgresResource(
        dsn=secret(settings.postgres.dsn.get_secret_value(), "TICKFORGE_POSTGRES__DSN", env_secrets),
        schema_name=settings.postgres.schema_name,
    )
