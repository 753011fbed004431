"""What the running platform says about itself, read from Kafka, PostgreSQL, S3, the Snowflake
endpoint, Dagster and Prometheus: the facts ``tickforge status`` and ``tickforge doctor`` judge.

Each function asks one system one question and raises (OSError, KafkaException, psycopg.Error,
...) when it does not answer; the callers turn that into a verdict. Short timeouts throughout: a
doctor that hangs on a dead endpoint is no help.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.streaming.registry import WorkerSpec
from tickforge.streaming.runtime import Checkpoint

TIMEOUT_S = 5.0
_CHECKPOINT = msgspec.json.Decoder(Checkpoint)
# librdkafka's own notices (level 6, e.g. purging its queue on close) are no verdict: warnings and worse only.
QUIET = {"log_level": 4}
NEAR_END = 16  # offsets before the end a group may stand with nothing but commit markers left to read


@dataclass(frozen=True)
class GroupLag:
    """How far one consumer group is behind its input topics."""

    behind: int  # messages between its position and the end (the last stable offset)
    committed: bool  # False: the group never committed (``behind`` counts whole topics)


def _consumer(settings: Settings, group_id: str, **overrides: Any) -> Any:
    from tickforge.platform.io.kafka import make_consumer

    return make_consumer(settings, group_id, **QUIET, **{"socket.timeout.ms": int(TIMEOUT_S * 1000)}, **overrides)


def _position(offset: int, metadata: str | None) -> int:
    """A committed offset's real position: the exactly-once workers commit the oldest input
    still needed (a replay point) and keep the position reached (the checkpoint's ``hi``) in
    the metadata."""
    if metadata:
        try:
            return max(offset, _CHECKPOINT.decode(metadata).hi)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    return offset


def consumer_lag(settings: Settings, specs: list[WorkerSpec]) -> dict[str, GroupLag]:
    """Per registry entry that consumes: data messages its group still has to read."""
    from confluent_kafka import TopicPartition

    from tickforge.platform.io.kafka import topic_name

    prefix = settings.kafka.topic_prefix
    out: dict[str, GroupLag] = {}
    for spec in specs:
        probe = _consumer(settings, spec.group_id(prefix))
        try:
            behind, committed = 0, False
            near_end: dict[tuple[str, int], tuple[int, int]] = {}
            for topic in spec.input_topics:
                name = topic_name(settings, topic)
                meta = probe.list_topics(name, timeout=TIMEOUT_S).topics.get(name)
                if meta is None or meta.error is not None:
                    continue
                parts = [TopicPartition(name, p) for p in sorted(meta.partitions)]
                for tp in probe.committed(parts, timeout=TIMEOUT_S):
                    low, high = probe.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
                    start = _position(tp.offset, tp.metadata) if tp.offset >= 0 else low
                    committed = committed or tp.offset >= 0
                    if 0 < high - start <= NEAR_END:
                        near_end[(name, tp.partition)] = (start, high)
                    else:
                        behind += max(0, high - start)
            behind += _data_messages(settings, near_end)
            out[spec.name] = GroupLag(behind, committed)
        finally:
            probe.close()
    return out


def _data_messages(settings: Settings, spans: dict[tuple[str, int], tuple[int, int]]) -> int:
    """Data messages in each [start, end) span, read (``read_committed``). A transactional topic's
    commit markers take offsets too, so a worker that has read everything stands one offset
    (a marker) short of the end per partition: offsets alone would call that a lag."""
    from confluent_kafka import KafkaError, TopicPartition

    if not spans:
        return 0
    reader = _consumer(
        settings, f"{settings.kafka.topic_prefix}doctor-{time.time_ns()}", **{"enable.partition.eof": True}
    )
    count = 0
    try:
        reader.assign([TopicPartition(name, p, start) for (name, p), (start, _) in spans.items()])
        pending = set(spans)
        deadline = time.monotonic() + TIMEOUT_S
        while pending and time.monotonic() < deadline:
            for msg in reader.consume(500, timeout=0.2):
                key = (msg.topic(), msg.partition())
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)
                    continue
                if msg.offset() < spans[key][1]:
                    count += 1
                if msg.offset() + 1 >= spans[key][1]:
                    pending.discard(key)
        # Not read in time: count those spans whole (a lag shown too high, never hidden).
        count += sum(end - start for key, (start, end) in spans.items() if key in pending)
    finally:
        reader.close()
    return count


def oldest_unread_age_s(settings: Settings, spec: WorkerSpec) -> float | None:
    """Age (by the broker's timestamp) of the oldest message a group has not committed past, over
    its input topics; None when it has read everything."""
    from confluent_kafka import TopicPartition

    from tickforge.platform.io.kafka import topic_name

    group = _consumer(settings, spec.group_id(settings.kafka.topic_prefix))
    reader = _consumer(settings, f"{settings.kafka.topic_prefix}doctor-{time.time_ns()}")
    oldest: float | None = None
    try:
        for topic in spec.input_topics:
            name = topic_name(settings, topic)
            meta = group.list_topics(name, timeout=TIMEOUT_S).topics.get(name)
            if meta is None or meta.error is not None:
                continue
            for tp in group.committed([TopicPartition(name, p) for p in sorted(meta.partitions)], timeout=TIMEOUT_S):
                low, high = group.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
                start = max(_position(tp.offset, tp.metadata), low)
                if start >= high:
                    continue
                reader.assign([TopicPartition(name, tp.partition, start)])
                msg = reader.poll(TIMEOUT_S)
                if msg is not None and msg.error() is None:
                    stamp_ms = msg.timestamp()[1]
                    age = time.time() - stamp_ms / 1000
                    oldest = age if oldest is None else max(oldest, age)
    finally:
        group.close()
        reader.close()
    return oldest


def dead_letters_since(settings: Settings, since_ms: int, limit: int = 50_000) -> dict[str, int]:
    """Dead letters published since ``since_ms`` (broker time), counted by reason (at most
    ``limit`` read; an undecodable one counts as ``Reason.UNDECODABLE``)."""
    from confluent_kafka import TopicPartition

    from tickforge.platform.contracts import DEAD_LETTER_DECODER
    from tickforge.platform.io.kafka import topic_name
    from tickforge.platform.topics import DEAD_LETTER

    name = topic_name(settings, DEAD_LETTER)
    reader = _consumer(settings, f"{settings.kafka.topic_prefix}doctor-{time.time_ns()}")
    counts: dict[str, int] = {}
    try:
        meta = reader.list_topics(name, timeout=TIMEOUT_S).topics.get(name)
        if meta is None or meta.error is not None:
            raise LookupError(f"topic {name} does not exist")
        asked = [TopicPartition(name, p, since_ms) for p in sorted(meta.partitions)]
        starts = reader.offsets_for_times(asked, timeout=TIMEOUT_S)
        ends = {
            p: reader.get_watermark_offsets(TopicPartition(name, p), timeout=TIMEOUT_S, cached=False)[1]
            for p in meta.partitions
        }
        todo = [tp for tp in starts if 0 <= tp.offset < ends[tp.partition]]
        if not todo:
            return counts
        reader.assign(todo)
        pending, seen = {tp.partition for tp in todo}, 0
        deadline = time.monotonic() + 3 * TIMEOUT_S
        while pending and seen < limit and time.monotonic() < deadline:
            for msg in reader.consume(1_000, timeout=0.5):
                if msg.error() is not None or msg.offset() >= ends[msg.partition()]:
                    continue
                seen += 1
                try:
                    reason = str(DEAD_LETTER_DECODER.decode(msg.value()).reason)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    reason = Reason.UNDECODABLE.value
                counts[reason] = counts.get(reason, 0) + 1
            positions = reader.position([TopicPartition(name, p) for p in pending])
            pending = {tp.partition for tp in positions if tp.offset < ends[tp.partition]}
    finally:
        reader.close()
    return counts


@dataclass(frozen=True)
class TopicState:
    partitions: int
    config: dict[str, str]


def topic_states(settings: Settings, names: list[str]) -> dict[str, TopicState]:
    """Partitions and (the registry's) config keys of the named topics that exist."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    from tickforge.platform.io.kafka import client_config

    admin = AdminClient(client_config(settings, **QUIET))
    listed = admin.list_topics(timeout=TIMEOUT_S).topics
    present = [n for n in names if n in listed and listed[n].error is None]
    out: dict[str, TopicState] = {}
    if not present:
        return out
    futures = admin.describe_configs([ConfigResource("topic", n) for n in present], request_timeout=TIMEOUT_S)
    for resource, future in futures.items():
        entries = future.result(timeout=TIMEOUT_S)
        out[resource.name] = TopicState(
            len(listed[resource.name].partitions), {k: str(v.value) for k, v in entries.items()}
        )
    return out


def kafka_reachable(settings: Settings) -> int:
    """The number of brokers the cluster reports."""
    from confluent_kafka.admin import AdminClient

    from tickforge.platform.io.kafka import client_config

    admin = AdminClient(client_config(settings, **QUIET, **{"socket.timeout.ms": int(TIMEOUT_S * 1000)}))
    return len(admin.list_topics(timeout=TIMEOUT_S).brokers)


def postgres_version(settings: Settings) -> str:
    import psycopg

    with psycopg.connect(settings.postgres.dsn.get_secret_value(), connect_timeout=int(TIMEOUT_S)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def s3_buckets(settings: Settings) -> dict[str, bool]:
    """Whether each of the platform's buckets exists (a wrong key or a dead endpoint raises)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    s3 = settings.s3
    secret = s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
    client = boto3.client(
        "s3",
        region_name=s3.region,
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=secret,
        config=Config(connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"max_attempts": 1}),
    )
    found: dict[str, bool] = {}
    for bucket in (s3.raw_bucket, s3.archive_bucket):
        try:
            client.head_bucket(Bucket=bucket)
            found[bucket] = True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            found[bucket] = False
    return found


def snowflake_address(settings: Settings) -> tuple[str, int]:
    """The Snowflake endpoint: the local stand-in's host and port, or the account's host."""
    sf = settings.snowflake
    if sf.host:
        return sf.host, sf.port or (443 if sf.protocol != "http" else 80)
    return f"{sf.account}.snowflakecomputing.com", 443


def tcp_reachable(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=TIMEOUT_S):
        pass


def http_ok(url: str, timeout: float = TIMEOUT_S) -> bool:
    """True when ``url`` answers 200 (an error status or no answer: False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def watermark_reports(settings: Settings, timeframes: list[str]) -> dict[str, tuple[int, float]]:
    """Per timeframe: the golden watermark (min over source partitions, epoch ms) and the epoch
    seconds it reached that value (see :func:`tickforge.platform.io.postgres.watermark_reports`)."""
    import psycopg

    from tickforge.platform.io.postgres import watermark_reports as stored_reports

    with psycopg.connect(settings.postgres.dsn.get_secret_value(), connect_timeout=int(TIMEOUT_S)) as conn:
        return stored_reports(conn, settings.postgres.schema_name, timeframes)


DAGSTER_QUERY = """
query Doctor($job: String!) {
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
  runsOrError(filter: {pipelineName: $job}, limit: 1) {
    __typename
    ... on Runs {
      results {
        runId status startTime endTime tags { key value }
        eventConnection(limit: 10000) {
          events { __typename ... on AssetCheckEvaluationEvent { evaluation { checkName success assetKey { path } } } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


@dataclass(frozen=True)
class DagsterFacts:
    daemons: dict[str, bool]  # required daemon -> healthy
    last_run: dict[str, Any] | None  # runId, status, startTime, endTime, partition
    failed_checks: list[str]  # "asset/key:check" of the last run


def dagster_facts(url: str, job: str = "nightly") -> DagsterFacts:
    """The daemons' health and the job's last run with its failed checks, from Dagster's GraphQL API."""
    body = json.dumps({"query": DAGSTER_QUERY, "variables": {"job": job}}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=2 * TIMEOUT_S) as response:
        answer = json.loads(response.read())
    if answer.get("errors"):
        raise RuntimeError(f"Dagster GraphQL: {answer['errors'][0].get('message')}")
    data = answer["data"]
    daemons = {
        d["daemonType"]: bool(d["healthy"])
        for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
        if d["required"]
    }
    runs = data["runsOrError"]
    if runs["__typename"] != "Runs":
        raise RuntimeError(f"Dagster runs: {runs.get('message', runs['__typename'])}")
    if not runs["results"]:
        return DagsterFacts(daemons, None, [])
    run = runs["results"][0]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    failed = [
        f"{'/'.join(e['evaluation']['assetKey']['path'])}:{e['evaluation']['checkName']}"
        for e in run["eventConnection"]["events"]
        if e["__typename"] == "AssetCheckEvaluationEvent" and not e["evaluation"]["success"]
    ]
    last = {
        "run_id": run["runId"],
        "status": run["status"],
        "start_time": run["startTime"],
        "end_time": run["endTime"],
        "partition": tags.get("dagster/partition"),
    }
    return DagsterFacts(daemons, last, failed)


def disk_free(path: Path) -> tuple[int, int]:
    """(free bytes, total bytes) of the file system holding ``path`` (its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.free, usage.total
