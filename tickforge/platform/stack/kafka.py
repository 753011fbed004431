"""Apache Kafka 4.1 broker, KRaft single node (broker and controller in one JVM).

The broker's classpath is resolved from Maven Central with ``mvn dependency:copy-dependencies`` on
``resources/kafka/pom.xml`` into a jar cache that ``down --wipe`` keeps. The data dir is formatted
once (``--standalone``), so topics and offsets survive ``down``/``up``.
"""

from __future__ import annotations

import base64
import logging
import shutil
import string
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from tickforge.platform.stack import maven
from tickforge.platform.stack.base import Launch, Service, ServiceContext, StackError
from tickforge.platform.stack.maven import java_major_version  # noqa: F401  (re-exported)
from tickforge.platform.stack.process import LOCALHOST, port_accepts, run_checked

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
_RESOURCES = resources.files("tickforge.platform.stack") / "resources" / "kafka"
MAVEN_HELP = maven.maven_help("Kafka")


def render_server_properties(*, broker_port: int, controller_port: int, log_dir: Path) -> str:
    template = (_RESOURCES / "server.properties").read_text()
    return string.Template(template).substitute(
        broker_port=broker_port, controller_port=controller_port, log_dir=log_dir
    )


def new_cluster_id() -> str:
    """Kafka's ``Uuid.toString()`` form (URL-safe base64, no padding); saves a JVM start of
    ``kafka-storage random-uuid``."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


KAFKA_POM = _RESOURCES / "pom.xml"


def classpath_ready(lib_dir: Path) -> bool:
    return maven.classpath_ready(lib_dir, KAFKA_POM)


def ensure_classpath(lib_dir: Path) -> bool:
    """Resolve the broker's jars into ``lib_dir`` unless already there; True if it resolved."""
    return maven.ensure_classpath(lib_dir, KAFKA_POM, "Kafka")


def find_java() -> str:
    return maven.find_java("Kafka")


class KafkaService(Service):
    name = "kafka"
    port_keys = ("kafka", "kafka_controller")
    start_timeout = 120.0  # a cold JVM on two busy cores
    stop_timeout = 30.0  # controlled shutdown flushes logs and snapshots

    def __init__(self, lib_dir: Path) -> None:
        self.lib_dir = lib_dir
        self._java: str | None = None

    def check_prerequisites(self) -> None:
        self._java = find_java()
        if not classpath_ready(self.lib_dir) and shutil.which("mvn") is None:
            raise StackError(MAVEN_HELP)

    def prepare(self, ctx: ServiceContext) -> Launch:
        java = self._java or find_java()
        if ensure_classpath(self.lib_dir):
            log.info("resolved Kafka %s jars into %s", KAFKA_VERSION, self.lib_dir)
        data_dir = ctx.home / "data"
        config = ctx.home / "server.properties"
        log4j = ctx.home / "log4j2.yaml"
        ctx.home.mkdir(parents=True, exist_ok=True)
        # Rendered every start: the ports may differ from the previous run (the single-node
        # quorum tolerates a new controller port).
        config.write_text(
            render_server_properties(
                broker_port=ctx.ports["kafka"],
                controller_port=ctx.ports["kafka_controller"],
                log_dir=data_dir,
            )
        )
        log4j.write_text((_RESOURCES / "log4j2.yaml").read_text())
        jvm_common = [f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.lib_dir}/*"]
        if not (data_dir / "meta.properties").exists():
            # A data dir without meta.properties is a half-finished format: start over.
            shutil.rmtree(data_dir, ignore_errors=True)
            run_checked(
                [
                    java,
                    "-Xmx256m",
                    *jvm_common,
                    "kafka.tools.StorageTool",
                    "format",
                    "--config",
                    str(config),
                    f"--cluster-id={new_cluster_id()}",
                    "--standalone",
                ],
                what="Formatting the Kafka data dir",
                cwd=ctx.home,
            )
        return Launch(
            argv=[
                # Kafka's own G1 settings (kafka-run-class.sh): short pauses keep the tail of a
                # transaction commit, and so of every bar's emit latency, low.
                java,
                "-Xms512m",
                "-Xmx1g",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                *jvm_common,
                "kafka.Kafka",
                str(config),
            ],
            cwd=ctx.home,
        )

    def ready(self, ctx: ServiceContext) -> bool:
        # 4.x binds the client port only once the broker is unfenced; the metadata request
        # proves it serves clients.
        port = ctx.ports["kafka"]
        if not port_accepts(port):
            return False
        # The client takes a Logger for "logger", which the stubs' value type leaves out.
        config: dict[str, Any] = {"bootstrap.servers": f"{LOCALHOST}:{port}", "logger": log}
        admin = AdminClient(config)
        return bool(admin.list_topics(timeout=5).brokers)

    def endpoint(self, ctx: ServiceContext) -> dict[str, Any]:
        return {
            "bootstrap_servers": f"{LOCALHOST}:{ctx.ports['kafka']}",
            "port": ctx.ports["kafka"],
            "controller_port": ctx.ports["kafka_controller"],
        }

    @classmethod
    def env_vars(cls, endpoint: Mapping[str, Any]) -> dict[str, str]:
        return {"TICKFORGE_KAFKA__BOOTSTRAP_SERVERS": str(endpoint["bootstrap_servers"])}

    def kept_on_wipe(self, ctx: ServiceContext) -> list[Path]:
        return [self.lib_dir]
