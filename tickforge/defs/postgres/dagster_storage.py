"""Dagster instance storage on PostgreSQL, configured with a plain ``postgresql://`` DSN.

dagster-postgres hands ``postgres_url`` to SQLAlchemy, and SQLAlchemy 2.1 maps ``postgresql://``
to psycopg 3, with which the event log's ``NOTIFY run_events, %(id)s`` fails (psycopg 3 binds
parameters server-side and NOTIFY takes none: seen here). The platform's DSN
(``TICKFORGE_POSTGRES__DSN``) is a libpq URL shared with psycopg 3 code, so this storage class
only rewrites the scheme to ``postgresql+psycopg2`` for Dagster. Used from ``dagster.yaml``::

    storage:
      custom:
        module: tickforge.defs.postgres.dagster_storage
        class: TickforgePostgresStorage
        config:
          postgres_url:
            env: TICKFORGE_POSTGRES__DSN
"""

from __future__ import annotations

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config


def psycopg2_url(dsn: str) -> str:
    """``postgresql://...`` or ``postgres://...`` -> ``postgresql+psycopg2://...``."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        raise ValueError("expected a URL DSN (postgresql://user@host:port/db)")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2://{rest}"
    return dsn  # an explicit driver is kept


class TickforgePostgresStorage(DagsterPostgresStorage):
    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> DagsterPostgresStorage:
        return DagsterPostgresStorage(
            inst_data=inst_data,
            postgres_url=psycopg2_url(pg_url_from_config(config_value)),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
