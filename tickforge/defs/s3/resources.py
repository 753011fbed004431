"""The object store resource: S3, or the local S3 stand-in when ``endpoint_url`` is set."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from pydantic import Field

from tickforge.defs.lib.secrets import secret
from tickforge.platform.io.raw_layout import land_trades
from tickforge.platform.settings import Settings


class ObjectStoreResource(ConfigurableResource):
    """S3 (or the local S3 stand-in when ``endpoint_url`` is set) for raw and archived data."""

    endpoint_url: str | None = Field(default=None, description="None: AWS itself")
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    raw_bucket: str = "tickforge-raw"
    archive_bucket: str = "tickforge-archive"

    def client(self) -> Any:
        import boto3  # heavy import, only in the steps that use S3

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
        table = (
            frame.to_arrow() if isinstance(frame, pl.DataFrame) else pa.Table.from_pandas(frame, preserve_index=False)
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        body = buffer.getvalue()
        self.client().put_object(Bucket=bucket, Key=key, Body=body)
        return len(body)

    def read_parquet(self, bucket: str, key: str) -> pl.DataFrame:
        body = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        frame = pl.from_arrow(pq.read_table(io.BytesIO(body)))
        assert isinstance(frame, pl.DataFrame)  # a table converts to a frame
        return frame


def object_store_resource(settings: Settings, env_secrets: bool = True) -> ObjectStoreResource:
    s3 = settings.s3
    return ObjectStoreResource(
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=secret(
            None if s3.secret_access_key is None else s3.secret_access_key.get_secret_value(),
            "TICKFORGE_S3__SECRET_ACCESS_KEY",
            env_secrets,
        ),
        raw_bucket=s3.raw_bucket,
        archive_bucket=s3.archive_bucket,
    )


def land_trades_parquet(settings: Settings, trades_df: pl.DataFrame, part: str = "part-00000") -> list[str]:
    """:func:`~tickforge.platform.io.raw_layout.land_trades` with the object store the settings describe."""
    return land_trades(object_store_resource(settings, env_secrets=False), trades_df, part)
