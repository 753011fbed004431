"""S3 API: moto's server, in memory only (buckets and objects do not survive ``down``).

Started with this interpreter (``python -m moto.server``) so it never depends on PATH. The
buckets named in Settings are created after every start.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from tickforge.platform.stack.base import Launch, Service, ServiceContext
from tickforge.platform.stack.process import LOCALHOST, port_accepts

# moto accepts any credentials; these fixed fake ones only make clients sign requests.
ACCESS_KEY_ID = "tickforge-local"
SECRET_ACCESS_KEY = "tickforge-local-secret"


def s3_client(endpoint: Mapping[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint["endpoint_url"],
        region_name=endpoint["region"],
        aws_access_key_id=endpoint["access_key_id"],
        aws_secret_access_key=endpoint["secret_access_key"],
        # Fail fast while the server boots instead of botocore's retries with backoff.
        config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
    )


class S3Service(Service):
    name = "s3"
    port_keys = ("s3",)
    start_timeout = 30.0

    def prepare(self, ctx: ServiceContext) -> Launch:
        # Nothing on disk: run from the state folder instead of creating an empty home.
        return Launch(
            argv=[sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(ctx.ports["s3"])],
            cwd=ctx.home.parent,
        )

    def ready(self, ctx: ServiceContext) -> bool:
        if not port_accepts(ctx.ports["s3"]):
            return False
        s3_client(self.endpoint(ctx)).list_buckets()
        return True

    def after_start(self, ctx: ServiceContext) -> None:
        client = s3_client(self.endpoint(ctx))
        region = ctx.settings.s3.region
        # S3 rejects an explicit us-east-1 location and requires it for every other region.
        where: dict[str, Any] = {}
        if region != "us-east-1":
            where["CreateBucketConfiguration"] = {"LocationConstraint": region}
        for bucket in (ctx.settings.s3.raw_bucket, ctx.settings.s3.archive_bucket):
            try:
                client.create_bucket(Bucket=bucket, **where)
            except ClientError as exc:
                # A reused server already has them.
                if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                    raise

    def endpoint(self, ctx: ServiceContext) -> dict[str, Any]:
        s3 = ctx.settings.s3
        return {
            "endpoint_url": f"http://{LOCALHOST}:{ctx.ports['s3']}",
            "port": ctx.ports["s3"],
            "region": s3.region,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            "raw_bucket": s3.raw_bucket,
            "archive_bucket": s3.archive_bucket,
        }

    @classmethod
    def env_vars(cls, endpoint: Mapping[str, Any]) -> dict[str, str]:
        keys = ("endpoint_url", "region", "access_key_id", "secret_access_key")
        keys += ("raw_bucket", "archive_bucket")
        return {f"TICKFORGE_S3__{key.upper()}": str(endpoint[key]) for key in keys}
