"""The local stack's pure parts: rendered config, env file, port choice, wipe, prerequisites."""

from __future__ import annotations

import os
import re
import socket
import stat
from pathlib import Path

import pytest

from tickforge.platform.settings import Settings, load_settings
from tickforge.platform.stack import DEFAULT_PORTS, LocalStack, StackError, endpoints_env
from tickforge.platform.stack.cli import mask
from tickforge.platform.stack.kafka import (
    ensure_classpath,
    find_java,
    java_major_version,
    new_cluster_id,
    render_server_properties,
)
from tickforge.platform.stack.launcher import ports_from_env
from tickforge.platform.stack.postgres import find_bindir, first_blocking_dir
from tickforge.platform.stack.state import (
    ServiceRecord,
    load_records,
    render_env_file,
    save_records,
    wipe,
    write_env_file,
)

STATUS = {
    "kafka": {"running": True, "pid": 1, "bootstrap_servers": "127.0.0.1:19092"},
    "postgres": {"running": True, "pid": 2, "dsn": "postgresql://postgres@127.0.0.1:1/tickforge"},
    "s3": {
        "running": True,
        "pid": 3,
        "endpoint_url": "http://127.0.0.1:19000",
        "region": "us-east-1",
        "access_key_id": "key",
        "secret_access_key": 'se"cr#et',
        "raw_bucket": "raw-b",
        "archive_bucket": "archive-b",
    },
    "snowflake": {
        "running": True,
        "pid": 4,
        "host": "127.0.0.1",
        "port": 18765,
        "protocol": "http",
        "account": "fakesnow",
        "user": "fake",
        "password": "snow",
        "database": "TICKFORGE",
    },
}


def test_server_properties_render_a_single_node_with_transactions(tmp_path: Path) -> None:
    text = render_server_properties(broker_port=19092, controller_port=19093, log_dir=tmp_path)
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path)
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert int(props["log.cleaner.dedupe.buffer.size"]) <= 8 * 1024 * 1024
    assert "$" not in text


def test_cluster_id_has_kafkas_uuid_form() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", new_cluster_id())
    assert new_cluster_id() != new_cluster_id()


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert java_major_version(output) == major


def test_missing_java_is_one_sentence_naming_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(StackError, match=r"apt-get install openjdk-17-jre-headless$"):
        find_java()


def test_missing_maven_is_one_sentence_naming_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"apt-get install maven$"):
        ensure_classpath(tmp_path / "lib")


def test_missing_postgres_binaries_name_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"apt-get install postgresql-15$"):
        find_bindir(debian_root=tmp_path)


def test_postgres_binaries_prefer_the_newest_debian_major(tmp_path: Path) -> None:
    for major in ("13", "15"):
        bindir = tmp_path / major / "bin"
        bindir.mkdir(parents=True)
        for program in ("initdb", "postgres"):
            (bindir / program).touch()
    assert find_bindir(debian_root=tmp_path) == tmp_path / "15" / "bin"


def test_first_blocking_dir_finds_a_folder_without_search_permission(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    inner = closed / "inner"
    inner.mkdir(parents=True)
    closed.chmod(0o600)  # readable, not enterable, even by its owner
    try:
        assert first_blocking_dir(inner, os.getuid(), set()) == closed
    finally:
        closed.chmod(0o700)
    assert first_blocking_dir(inner, os.getuid(), set()) is None


def test_endpoints_env_covers_running_services_only() -> None:
    status = {**STATUS, "kafka": {"running": False, "pid": None, "bootstrap_servers": "x:1"}}
    env = endpoints_env(status)
    assert "TICKFORGE_KAFKA__BOOTSTRAP_SERVERS" not in env
    assert env["TICKFORGE_POSTGRES__DSN"] == STATUS["postgres"]["dsn"]
    assert env["TICKFORGE_S3__ENDPOINT_URL"] == "http://127.0.0.1:19000"
    assert env["TICKFORGE_SNOWFLAKE__PORT"] == "18765"


def test_env_file_round_trips_through_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    write_env_file(state_dir / "stack.env", endpoints_env(STATUS))
    assert stat.S_IMODE((state_dir / "stack.env").stat().st_mode) == 0o600
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TICKFORGE_STATE_DIR", str(state_dir))
    for key in [k for k in os.environ if k.startswith("TICKFORGE_") and "__" in k]:
        monkeypatch.delenv(key)
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.postgres.dsn.get_secret_value() == STATUS["postgres"]["dsn"]
    assert settings.s3.secret_access_key is not None
    assert settings.s3.secret_access_key.get_secret_value() == 'se"cr#et'
    assert settings.s3.raw_bucket == "raw-b"
    args = settings.snowflake.connect_args()
    assert (args["host"], args["port"], args["protocol"]) == ("127.0.0.1", 18765, "http")


def test_env_file_text_is_sorted_and_quoted() -> None:
    text = render_env_file({"B": "2", "A": 'x"y'})
    assert text.splitlines()[-2:] == ['A="x\\"y"', 'B="2"']


def test_mask_hides_secrets_for_humans() -> None:
    shown = mask({**STATUS["s3"], "dsn": "postgresql://u:pw@h/db"})
    assert shown["secret_access_key"] == "***"
    assert shown["dsn"] == "postgresql://u:***@h/db"
    assert shown["access_key_id"] == "key"


def test_records_round_trip(tmp_path: Path) -> None:
    records = {"s3": ServiceRecord(ports={"s3": 9000}, pid=42, start_time=7)}
    save_records(tmp_path, records)
    loaded = load_records(tmp_path)
    assert loaded == records
    assert loaded["s3"].process() is not None
    assert ServiceRecord(ports={"s3": 9000}).process() is None


def test_wipe_keeps_the_jar_cache_and_the_lock(tmp_path: Path) -> None:
    lib = tmp_path / "kafka" / "lib"
    lib.mkdir(parents=True)
    (lib / "kafka.jar").touch()
    (tmp_path / "kafka" / "data").mkdir()
    (tmp_path / "postgres" / "data").mkdir(parents=True)
    (tmp_path / "stack.json").touch()
    (tmp_path / "stack.lock").touch()
    wipe(tmp_path, keep=[lib, tmp_path / "stack.lock"])
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert remaining == ["kafka", "kafka/lib", "kafka/lib/kafka.jar", "stack.lock"]


def test_ports_from_env() -> None:
    env = {"TICKFORGE_STACK_KAFKA_CONTROLLER_PORT": "19999", "TICKFORGE_STACK_S3_PORT": "19000"}
    assert ports_from_env(env) == {"kafka_controller": 19999, "s3": 19000}


def test_taken_default_port_falls_back_and_taken_explicit_port_fails(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = LocalStack(state_dir=tmp_path, settings=Settings())
        s3 = stack.services["s3"]
        chosen = stack._choose_ports(s3, previous={"s3": port}, taken=set())
        assert chosen["s3"] != port
        explicit = LocalStack(state_dir=tmp_path, ports={"s3": port}, settings=Settings())
        with pytest.raises(StackError, match="TICKFORGE_STACK_S3_PORT"):
            explicit._choose_ports(s3, previous={}, taken=set())


def test_unknown_port_key_or_service_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown port keys"):
        LocalStack(state_dir=tmp_path, ports={"kafak": 1}, settings=Settings())
    with pytest.raises(ValueError, match="unknown services"):
        LocalStack(state_dir=tmp_path, settings=Settings()).up(["kafak"])
    assert set(DEFAULT_PORTS) >= {"kafka", "kafka_controller", "postgres", "s3", "snowflake"}


def test_a_port_counts_as_a_services_only_when_its_own_process_listens_on_it():
    """Two stacks may pick the same free port a moment apart: the probe of the one that lost the
    bind reaches the other's service, so readiness also asks whose socket it is."""
    import socket
    import subprocess
    import sys

    from tickforge.platform.stack.process import ProcessRef, listens_on, process_start_time

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            start = process_start_time(other.pid)
            assert start is not None
            assert not listens_on(ProcessRef(other.pid, start), port)  # answers, but not this process's
            me = process_start_time(os.getpid())
            assert me is not None and listens_on(ProcessRef(os.getpid(), me), port)
        finally:
            other.kill()
            other.wait()
    assert not listens_on(ProcessRef(os.getpid(), me), port)  # closed: nobody listens
