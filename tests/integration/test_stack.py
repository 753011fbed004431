"""The local stack for real: up -> every service answers -> reuse/restart -> down -> nothing left.

One stack for the module, in its own temporary state folder on free ports (so it never meets a
developer's stack or the session stack of tests/conftest.py). The Kafka and S3Proxy jar caches
are shared (TICKFORGE_KAFKA_LIB_CACHE, else ~/.cache/tickforge/kafka-4.1.1/lib;
TICKFORGE_S3_LIB_CACHE, else ~/.cache/tickforge/s3proxy-3.3.0/lib) so jars resolve only once.
The tests run in file order and share the stack's state on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
import snowflake.connector
from botocore.exceptions import ClientError
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tickforge.platform.settings import load_settings
from tickforge.platform.stack import DEFAULT_PORTS, LocalStack, UpEvent, endpoints_env
from tickforge.platform.stack.launcher import Status
from tickforge.platform.stack.process import any_free_port, process_start_time
from tickforge.platform.stack.snowflake import connect_args

pytestmark = pytest.mark.integration

LIB_CACHE = Path(os.environ.get("TICKFORGE_KAFKA_LIB_CACHE", Path.home() / ".cache/tickforge/kafka-4.1.1/lib"))
S3_LIB_CACHE = Path(os.environ.get("TICKFORGE_S3_LIB_CACHE", Path.home() / ".cache/tickforge/s3proxy-3.3.0/lib"))
CLI = "from tickforge.platform.stack.cli import stack_app; stack_app()"
# A raw landing object as the raw sink names them: it must outlive `down`.
RAW_KEY = "trades/date=2013-10-08/hour=13/0-100-199.parquet"
TAG = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # Not under pytest's base temp: PostgreSQL runs as ``postgres`` when we are root, and every
    # pytest session resets /tmp/pytest-of-<user> to 0700 (a concurrent session would lock it out).
    state_dir = Path(tempfile.mkdtemp(prefix="tickforge-stack-test-"))
    state_dir.chmod(state_dir.stat().st_mode | stat.S_IXOTH)
    ports: dict[str, int] = {}
    for key in DEFAULT_PORTS:
        ports[key] = any_free_port(set(ports.values()))
    local = LocalStack(state_dir=state_dir, ports=ports, kafka_lib_dir=LIB_CACHE, s3_lib_dir=S3_LIB_CACHE)
    try:
        yield local
    finally:
        local.down()  # no-op when a test already stopped it
        shutil.rmtree(state_dir, ignore_errors=True)


def _pids(status: Status) -> dict[str, int]:
    return {name: int(entry["pid"]) for name, entry in status.items()}


def _gone(pid: int) -> bool:
    """Gone or a zombie (exited, waiting for its parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _sf_rows(status: Status, query: str) -> list[tuple[object, ...]]:
    with snowflake.connector.connect(**connect_args(status["snowflake"])) as conn:
        return list(conn.cursor().execute(query).fetchall())


def test_up_starts_every_service_and_each_answers(stack: LocalStack) -> None:
    events: list[UpEvent] = []
    status = stack.up(progress=events.append)

    assert {e.service: e.action for e in events} == dict.fromkeys(status, "started")
    assert all(entry["running"] for entry in status.values()), status

    kafka = status["kafka"]["bootstrap_servers"]
    assert AdminClient({"bootstrap.servers": kafka}).list_topics(timeout=10).brokers
    producer = Producer({"bootstrap.servers": kafka, "transactional.id": f"stack-test-{TAG}"})
    producer.init_transactions(60)  # needs the single-node transaction log settings

    with psycopg.connect(status["postgres"]["dsn"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        applied = conn.execute("SELECT version FROM tickforge.schema_migrations").fetchall()
        assert applied, "migrations were not applied"

    s3 = status["s3"]
    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key_id"],
        aws_secret_access_key=s3["secret_access_key"],
    )
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert {s3["raw_bucket"], s3["archive_bucket"]} <= names
    stranger = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name=s3["region"],
        aws_access_key_id="someone",
        aws_secret_access_key="else",
    )
    with pytest.raises(ClientError) as refused:
        stranger.list_buckets()
    assert refused.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied")

    for query in (
        "CREATE DATABASE IF NOT EXISTS TICKFORGE",
        "CREATE SCHEMA IF NOT EXISTS TICKFORGE.STACK_TEST",
        "CREATE TABLE IF NOT EXISTS TICKFORGE.STACK_TEST.KEPT (id INT, note VARCHAR)",
        "INSERT INTO TICKFORGE.STACK_TEST.KEPT VALUES (1, 'survives down/up')",
    ):
        _sf_rows(status, query)
    assert _sf_rows(status, "SELECT * FROM TICKFORGE.STACK_TEST.KEPT") == [(1, "survives down/up")]


def test_env_file_points_settings_at_the_stack(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    status = stack.status()
    monkeypatch.chdir(tmp_path)  # no stray .env from the working directory
    monkeypatch.setenv("TICKFORGE_STATE_DIR", str(stack.state_dir))
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == status["kafka"]["bootstrap_servers"]
    assert settings.postgres.dsn.get_secret_value() == status["postgres"]["dsn"]
    assert settings.s3.endpoint_url == status["s3"]["endpoint_url"]
    assert settings.snowflake.port == status["snowflake"]["port"]
    with snowflake.connector.connect(**settings.snowflake.connect_args()) as conn:
        assert conn.cursor().execute("SELECT 1").fetchone() == (1,)
    assert endpoints_env(status)["TICKFORGE_S3__ACCESS_KEY_ID"] == status["s3"]["access_key_id"]


def test_cli_status_json_is_one_object_and_human_status_masks_secrets(stack: LocalStack) -> None:
    env = {**os.environ, "TICKFORGE_STATE_DIR": str(stack.state_dir)}
    as_json = subprocess.run([sys.executable, "-c", CLI, "status", "--json"], env=env, capture_output=True, text=True)
    assert as_json.returncode == 0, as_json.stderr
    parsed = json.loads(as_json.stdout)
    assert set(parsed) == {"kafka", "postgres", "s3", "snowflake"}
    assert parsed["s3"]["secret_access_key"]  # machine-readable output carries the fake secret
    human = subprocess.run([sys.executable, "-c", CLI, "status"], env=env, capture_output=True, text=True)
    assert human.returncode == 0, human.stderr
    assert parsed["s3"]["secret_access_key"] not in human.stdout
    assert "password=***" in human.stdout
    assert f"password={parsed['snowflake']['password']}" not in human.stdout
    assert "running" in human.stdout


def test_up_again_reuses_healthy_services(stack: LocalStack) -> None:
    before = _pids(stack.status())
    events: list[UpEvent] = []
    after = stack.up(progress=events.append)
    assert {e.action for e in events} == {"reused"}
    assert _pids(after) == before


def test_up_restarts_a_dead_service(stack: LocalStack) -> None:
    before = _pids(stack.status())
    os.kill(before["s3"], signal.SIGKILL)
    events: list[UpEvent] = []
    after = stack.up(progress=events.append)
    actions = {e.service: e.action for e in events}
    assert actions == {**dict.fromkeys(before, "reused"), "s3": "restarted"}
    assert after["s3"]["pid"] != before["s3"]
    assert after["s3"]["port"] == stack.status()["s3"]["port"]


def test_down_stops_everything_and_data_survives_up(stack: LocalStack) -> None:
    status = stack.status()
    topic = f"stack-test-{TAG}"
    admin = AdminClient({"bootstrap.servers": status["kafka"]["bootstrap_servers"]})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    with psycopg.connect(status["postgres"]["dsn"], autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS stack_kept (note text)")
        conn.execute("INSERT INTO stack_kept VALUES ('kept')")
    raw = Path(__file__).resolve().parents[2] / "data" / "samples" / "us_equity_nbbo_BAC_2013-10-08.csv.gz"
    body = raw.read_bytes()  # 1.2 MB of real bytes (the sink writes Parquet; any bytes do here)
    _s3(status).put_object(Bucket=status["s3"]["raw_bucket"], Key=RAW_KEY, Body=body)

    pids = _pids(status)
    timings = stack.down()
    assert set(timings) == set(pids)
    assert all(_gone(pid) for pid in pids.values()), pids
    assert not stack.env_file.exists()
    assert not any(entry["running"] for entry in stack.status().values())

    restarted = stack.up()
    assert _rows_kept(restarted) == [("kept",)]
    bucket = restarted["s3"]["raw_bucket"]
    assert _s3(restarted).get_object(Bucket=bucket, Key=RAW_KEY)["Body"].read() == body
    assert (stack.state_dir / "s3" / "data" / bucket / RAW_KEY).stat().st_size == len(body)
    kept = _sf_rows(restarted, "SELECT note FROM TICKFORGE.STACK_TEST.KEPT")
    assert kept == [("survives down/up",)]
    admin = AdminClient({"bootstrap.servers": restarted["kafka"]["bootstrap_servers"]})
    assert topic in admin.list_topics(timeout=10).topics


def _s3(status: Status):
    s3 = status["s3"]
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key_id"],
        aws_secret_access_key=s3["secret_access_key"],
    )


def _rows_kept(status: Status) -> list[tuple[object, ...]]:
    with psycopg.connect(str(status["postgres"]["dsn"])) as conn:
        return conn.execute("SELECT note FROM stack_kept").fetchall()


def test_down_wipe_removes_data_and_leaves_no_process(stack: LocalStack) -> None:
    status = stack.status()
    pids = _pids(status)
    starts = {pid: process_start_time(pid) for pid in pids.values()}
    stack.down(wipe=True)
    assert all(_gone(pid) or process_start_time(pid) != starts[pid] for pid in pids.values())
    assert sorted(p.name for p in stack.state_dir.iterdir()) == ["stack.lock"]
    assert any(LIB_CACHE.glob("kafka_2.13-*.jar")), "the jar cache must survive --wipe"
    assert any(S3_LIB_CACHE.glob("s3proxy-*.jar")), "the jar cache must survive --wipe"
