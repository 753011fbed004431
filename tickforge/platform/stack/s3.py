"""S3 API: S3Proxy (Apache-2.0) on its filesystem store, so buckets and objects survive ``down``.

S3Proxy's classpath is resolved from Maven Central like the Kafka broker's (``resources/s3proxy/
pom.xml``) into a jar cache that ``down --wipe`` keeps. Objects are plain files under
``<state>/s3/data/<bucket>/<key>``. Requests are signed (SigV2 or SigV4, any region) with the
fixed local credentials below; path-style addressing. The buckets named in Settings are created
after every start (an existing one is kept).
"""

from __future__ import annotations

import logging
import shutil
import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from tickforge.platform.stack import maven
from tickforge.platform.stack.base import Launch, Service, ServiceContext, StackError
from tickforge.platform.stack.process import LOCALHOST, port_accepts

log = logging.getLogger(__name__)

S3PROXY_VERSION = "3.3.0"
_RESOURCES = resources.files("tickforge.platform.stack") / "resources" / "s3proxy"
S3PROXY_POM = _RESOURCES / "pom.xml"
# Local fake credentials: S3Proxy checks signatures against them (a wrong key is refused).
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
        config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def render_properties(*, port: int, data_dir: Path) -> str:
    template = (_RESOURCES / "s3proxy.properties").read_text()
    return string.Template(template).substitute(
        host=LOCALHOST,
        port=port,
        data_dir=data_dir,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )


class S3Service(Service):
    name = "s3"
    port_keys = ("s3",)
    start_timeout = 60.0  # a cold JVM on two busy cores

    def __init__(self, lib_dir: Path) -> None:
        self.lib_dir = lib_dir
        self._java: str | None = None

    def check_prerequisites(self) -> None:
        self._java = maven.find_java("S3Proxy")
        if not maven.classpath_ready(self.lib_dir, S3PROXY_POM) and shutil.which("mvn") is None:
            raise StackError(maven.maven_help("S3Proxy"))

    def prepare(self, ctx: ServiceContext) -> Launch:
        java = self._java or maven.find_java("S3Proxy")
        if maven.ensure_classpath(self.lib_dir, S3PROXY_POM, "S3Proxy"):
            log.info("resolved S3Proxy %s jars into %s", S3PROXY_VERSION, self.lib_dir)
        data_dir = ctx.home / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        config = ctx.home / "s3proxy.properties"
        logback = ctx.home / "logback.xml"
        # Rendered every start: the port may differ from the previous run.
        config.write_text(render_properties(port=ctx.ports["s3"], data_dir=data_dir))
        logback.write_text((_RESOURCES / "logback.xml").read_text())
        return Launch(
            argv=[
                # C1 only and the serial collector: boots in ~2.4 s instead of ~3.5-6.5 s on two
                # busy cores; a local store of small objects never needs C2's peak speed.
                java,
                "-Xms32m",
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlogback.configurationFile={logback}",
                "-cp",
                f"{self.lib_dir}/*",
                "org.gaul.s3proxy.Main",
                "--properties",
                str(config),
            ],
            cwd=ctx.home,
        )

    def ready(self, ctx: ServiceContext) -> bool:
        if not port_accepts(ctx.ports["s3"]):
            return False
        s3_client(self.endpoint(ctx)).list_buckets()
        return True

    def after_start(self, ctx: ServiceContext) -> None:
        client = s3_client(self.endpoint(ctx))
        # No LocationConstraint: S3Proxy's filesystem store knows one location and refuses any
        # other region's name; the region still signs every request.
        for bucket in (ctx.settings.s3.raw_bucket, ctx.settings.s3.archive_bucket):
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                # Kept from the previous run, or a reused server already has them.
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
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
        keys = ("endpoint_url", "region", "access_key_id", "secret_access_key", "raw_bucket", "archive_bucket")
        return {f"TICKFORGE_S3__{key.upper()}": str(endpoint[key]) for key in keys}

    def kept_on_wipe(self, ctx: ServiceContext) -> list[Path]:
        return [self.lib_dir]
