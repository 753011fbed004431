"""Dagster resources, built from :class:`tickforge.platform.settings.Settings`.

``resources_for(settings)`` is the only place that turns settings into resources: the local stack
and production differ in configuration (endpoints, credentials), never in code. A Snowflake
account is used as is; when ``settings.snowflake.host`` is set (the local fakesnow stand-in),
host/port/protocol go through ``additional_snowflake_connection_args``.

Secrets are passed as :class:`dagster.EnvVar` when the value came from the environment, so that
Dagster shows the variable's name, not the secret, in the UI and in run snapshots.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource, EnvVar
from dagster_snowflake import SnowflakeResource
from pydantic import Field

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


class ObjectStoreResource(ConfigurableResource):
    """S3 (or the local S3 stand-in when ``endpoint_url`` is set) for raw and archived data."""

    endpoint_url: str | None = Field(default=None, description="None: AWS itself")
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    raw_bucket: str = "tickforge-raw"
    archive_bucket: str = "tickforge-archive"

    def client(self) -> Any:
        import boto3  # noqa: PLC0415 - heavy import, only in the steps that use S3

        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            kwargs["aws_access_key_id"] = self.access_key_id
            kwargs["aws_secret_access_key"] = self.secret_access_key
        return boto3.client("s3", **kwargs)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)

    def write_parquet(self, bucket: str, key: str, frame: pd.DataFrame | pl.DataFrame) -> int:
        """Write a frame as one Parquet object; returns its size in bytes."""
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else pa.Table.from_pandas(
            frame, preserve_index=False
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        body = buffer.getvalue()
        self.client().put_object(Bucket=bucket, Key=key, Body=body)
        return len(body)

    def read_parquet(self, bucket: str, key: str) -> pl.DataFrame:
        body = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return pl.from_arrow(pq.read_table(io.BytesIO(body)))  # type: ignore[return-value]


def _secret(value: str | None, env_name: str, env_secrets: bool = True) -> Any:
    """``EnvVar(env_name)`` when that variable holds exactly ``value``, else the value."""
    if env_secrets and value is not None and os.environ.get(env_name) == value:
        return EnvVar(env_name)
    return value


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
        password=_secret(sf.password.get_secret_value(), "TICKFORGE_SNOWFLAKE__PASSWORD", env_secrets),
        database=sf.database,
        warehouse=sf.warehouse,
        role=sf.role,
        network_timeout=15 if sf.host is not None else None,
        additional_snowflake_connection_args=extra or None,
    )


def resources_for(settings: Settings, *, env_secrets: bool = True) -> dict[str, Any]:
    """The resources of the code location, for the deployment ``settings`` describe.

    ``env_secrets=False`` gives plain values, for using a resource directly outside Dagster
    (an ``EnvVar`` is only resolved when Dagster initialises the resource).
    """
    s3 = settings.s3
    return {
        "postgres": PostgresResource(
            dsn=_secret(settings.postgres.dsn.get_secret_value(), "TICKFORGE_POSTGRES__DSN", env_secrets),
            schema_name=settings.postgres.schema_name,
        ),
        "object_store": ObjectStoreResource(
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=s3.access_key_id,
            secret_access_key=_secret(
                None if s3.secret_access_key is None else s3.secret_access_key.get_secret_value(),
                "TICKFORGE_S3__SECRET_ACCESS_KEY",
                env_secrets,
            ),
            raw_bucket=s3.raw_bucket,
            archive_bucket=s3.archive_bucket,
        ),
        "snowflake": snowflake_resource(settings, env_secrets),
    }


__all__ = ["ObjectStoreResource", "PostgresResource", "resources_for", "snowflake_resource"]
