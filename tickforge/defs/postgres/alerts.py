"""Alerts recorded by the sensors in PostgreSQL (``<schema>.pipeline_alerts``), one row each."""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

from tickforge.defs.postgres.resources import PostgresResource

_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.pipeline_alerts (
    id          bigserial   PRIMARY KEY,
    source      text        NOT NULL,
    severity    text        NOT NULL,
    message     text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{{}}',
    dedup_key   text        UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
)
"""


def record_alert(
    postgres: PostgresResource,
    source: str,
    severity: str,
    message: str,
    details: dict[str, Any] | None = None,
    dedup_key: str | None = None,
) -> bool:
    """Insert an alert; an alert with the same ``dedup_key`` is recorded once. True if new."""
    schema = sql.Identifier(postgres.schema_name)
    with postgres.connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(sql.SQL(_DDL).format(schema=schema))
        cur = conn.execute(
            sql.SQL(
                "INSERT INTO {}.pipeline_alerts (source, severity, message, details, dedup_key) "
                "VALUES (%s, %s, %s, %s::jsonb, %s) ON CONFLICT (dedup_key) DO NOTHING"
            ).format(schema),
            (source, severity, message, json.dumps(details or {}, default=str), dedup_key),
        )
        return cur.rowcount == 1


def list_alerts(postgres: PostgresResource, source: str | None = None) -> list[dict[str, Any]]:
    schema = sql.Identifier(postgres.schema_name)
    with postgres.connect() as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f"{postgres.schema_name}.pipeline_alerts",)).fetchone()
        if found is None or found[0] is None:
            return []
        query = sql.SQL("SELECT source, severity, message, details, dedup_key FROM {}.pipeline_alerts").format(schema)
        rows = conn.execute(
            query + sql.SQL(" WHERE source = %s ORDER BY id") if source else query + sql.SQL(" ORDER BY id"),
            (source,) if source else (),
        ).fetchall()
    return [dict(zip(("source", "severity", "message", "details", "dedup_key"), r, strict=True)) for r in rows]
