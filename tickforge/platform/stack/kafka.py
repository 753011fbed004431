"""Apache Kafka 4.1 broker, KRaft single node (broker and controller in one JVM).

The broker's classpath is resolved from Maven Central with ``mvn dependency:copy-dependencies`` on
``resources/kafka/pom.xml`` into a jar cache that ``down --wipe`` keeps. The data dir is formatted
once (``--standalone``), so topics and offsets survive ``down``/``up``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import string
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from tickforge.platform.stack.base import Launch, Service, ServiceContext, StackError
from tickforge.platform.stack.process import LOCALHOST, port_accepts, run_checked
from tickforge.platform.stack.state import file_lock

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
MIN_JAVA = 17
_RESOURCES = resources.files("tickforge.platform.stack") / "resources" / "kafka"
_COMPLETE_MARKER = ".tickforge-classpath"
JAVA_HELP = f"Kafka needs Java {MIN_JAVA}+: apt-get install openjdk-17-jre-headless"
MAVEN_HELP = "Kafka's jars are fetched from Maven Central with Maven: apt-get install maven"


def render_server_properties(*, broker_port: int, controller_port: int, log_dir: Path) -> str:
    template = (_RESOURCES / "server.properties").read_text()
    return string.Template(template).substitute(
        broker_port=broker_port, controller_port=controller_port, log_dir=log_dir
    )


def new_cluster_id() -> str:
    """Kafka's ``Uuid.toString()`` form (URL-safe base64, no padding); saves a JVM start of
    ``kafka-storage random-uuid``."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def classpath_fingerprint() -> str:
    """Identifies the pom the jar cache was resolved from; a changed pom re-resolves."""
    return hashlib.sha256((_RESOURCES / "pom.xml").read_bytes()).hexdigest()[:16]


def classpath_ready(lib_dir: Path) -> bool:
    marker = lib_dir / _COMPLETE_MARKER
    return marker.exists() and marker.read_text().strip() == classpath_fingerprint()


def ensure_classpath(lib_dir: Path) -> bool:
    """Resolve the broker's jars into ``lib_dir`` unless already there; True if it resolved.

    Resolution goes to a temporary folder that replaces ``lib_dir`` only when complete, so an
    interrupted ``mvn`` never leaves a half classpath behind. Maven keeps ``~/.m2`` as its cache.
    """
    if classpath_ready(lib_dir):
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(MAVEN_HELP)
    lib_dir.parent.mkdir(parents=True, exist_ok=True)
    # The cache may be shared by several state dirs (tests): one resolver at a time.
    with file_lock(lib_dir.parent / f".{lib_dir.name}.lock"):
        if classpath_ready(lib_dir):
            return False
        with tempfile.TemporaryDirectory(dir=lib_dir.parent, prefix=".resolve-") as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_bytes((_RESOURCES / "pom.xml").read_bytes())
            out = work / "lib"
            run_checked(
                [
                    mvn, "-B", "-q", "-f", str(work / "pom.xml"),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={out}", "-DincludeScope=runtime",
                ],
                what="Resolving Kafka's jars with Maven",
                cwd=work,
            )
            (out / _COMPLETE_MARKER).write_text(classpath_fingerprint() + "\n")
            if lib_dir.exists():
                shutil.rmtree(lib_dir)
            os.replace(out, lib_dir)
    return True


def java_major_version(version_output: str) -> int | None:
    """``openjdk version "17.0.15"`` -> 17; ``java version "1.8.0_392"`` -> 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        raise StackError(JAVA_HELP)
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA:
        raise StackError(f"{JAVA_HELP} (found {java}: Java {major or 'unknown'})")
    return java


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
                    java, "-Xmx256m", *jvm_common, "kafka.tools.StorageTool", "format",
                    "--config", str(config), f"--cluster-id={new_cluster_id()}", "--standalone",
                ],
                what="Formatting the Kafka data dir",
                cwd=ctx.home,
            )
        return Launch(
            argv=[
                # Kafka's own G1 settings (kafka-run-class.sh): short pauses keep the tail of a
                # transaction commit, and so of every bar's emit latency, low.
                java, "-Xms512m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true", *jvm_common, "kafka.Kafka", str(config),
            ],
            cwd=ctx.home,
        )

    def ready(self, ctx: ServiceContext) -> bool:
        # 4.x binds the client port only once the broker is unfenced; the metadata request
        # proves it serves clients.
        port = ctx.ports["kafka"]
        if not port_accepts(port):
            return False
        admin = AdminClient({"bootstrap.servers": f"{LOCALHOST}:{port}", "logger": log})
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
