"""The foundation's round trips through the real services of the local stack."""

from __future__ import annotations

import io
import time
import uuid
from importlib import resources

import boto3
import polars as pl
import psycopg
import pytest
import snowflake.connector
from confluent_kafka import Consumer, Producer, TopicPartition

from tickforge.platform.contracts import Bar
from tickforge.platform.io.kafka import topic_name
from tickforge.platform.io.postgres import apply_migrations, upsert_bars
from tickforge.platform.topics import TICKS, bar_topic

pytestmark = pytest.mark.integration


def _bar(**changes) -> Bar:
    base = dict(
        symbol="BAC",
        timeframe="1m",
        window_start=60_000,
        window_end=120_000,
        open=14.0,
        high=14.2,
        low=13.9,
        close=14.1,
        volume=1_000.0,
        notional=14_050.0,
        vwap=14.05,
        trade_count=7,
        first_ts=60_001,
        last_ts=119_000,
    )
    return Bar(**{**base, **changes})


def test_transactional_consume_transform_produce_is_read_committed(settings):
    """Offsets go with the output in one transaction; an aborted one is never seen."""
    source, sink = topic_name(settings, TICKS), topic_name(settings, bar_topic("1s"))
    servers = settings.kafka.bootstrap_servers
    plain = Producer({"bootstrap.servers": servers})
    for i in range(10):
        plain.produce(source, f"tick-{i}".encode(), b"BAC", partition=0)
    plain.flush(10)
    group = f"{settings.kafka.topic_prefix}tx-test"
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(source, 0, 0)])
    txn = Producer({"bootstrap.servers": servers, "transactional.id": f"{group}-{uuid.uuid4().hex}"})
    txn.init_transactions(30)
    msgs = []
    while len(msgs) < 10:
        msgs += [m for m in consumer.consume(10, timeout=1) if m.error() is None]
    # First transaction aborted: neither its output nor its offsets count.
    txn.begin_transaction()
    txn.produce(sink, b"aborted", b"BAC", partition=0)
    txn.abort_transaction()
    txn.begin_transaction()
    for m in msgs[:6]:
        txn.produce(sink, m.value().upper(), b"BAC", partition=0)
    txn.send_offsets_to_transaction(
        [TopicPartition(source, 0, msgs[5].offset() + 1)], consumer.consumer_group_metadata()
    )
    txn.commit_transaction(30)
    # An open (not yet committed) transaction is invisible to read_committed readers.
    txn.begin_transaction()
    txn.produce(sink, b"pending", b"BAC", partition=0)
    txn.flush(10)
    reader = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"r-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    reader.assign([TopicPartition(sink, 0, 0)])
    seen, deadline = [], time.monotonic() + 15
    while len(seen) < 6 and time.monotonic() < deadline:
        seen += [m.value() for m in reader.consume(10, timeout=0.5) if m.error() is None]
    assert seen == [f"TICK-{i}".encode() for i in range(6)]
    assert consumer.committed([TopicPartition(source, 0)], timeout=10)[0].offset == 6
    txn.abort_transaction()
    for c in (consumer, reader):
        c.close()


def test_postgres_golden_bar_upsert_replaces_whole_rows(settings):
    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name
    folder = resources.files("tickforge.platform.io") / "migrations"
    shipped = sorted(p.name.removesuffix(".sql") for p in folder.iterdir() if p.name.endswith(".sql"))
    assert shipped[0] == "001_golden_bars"
    assert apply_migrations(dsn, schema, ["1m"]) == shipped  # every migration, in order, once
    assert apply_migrations(dsn, schema, ["1m"]) == []  # idempotent
    with psycopg.connect(dsn) as conn:
        upsert_bars(conn, schema, "1m", [_bar()])
        upsert_bars(conn, schema, "1m", [_bar()])  # a replay writes the identical row
        upsert_bars(conn, schema, "1m", [_bar(high=14.5, volume=1_200.0, trade_count=9)])  # a correction
        conn.commit()
        rows = conn.execute(f"SELECT high, volume, trade_count FROM {schema}.bars_1m").fetchall()
    assert rows == [(14.5, 1_200.0, 9)]  # replaced, never added up


def test_parquet_round_trip_through_s3(settings):
    s3 = settings.s3
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key.get_secret_value(),
    )
    frame = pl.DataFrame({"symbol": ["BAC", "SPY"], "window_start": [0, 60_000], "close": [14.1, 168.2]})
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    key = f"{settings.kafka.topic_prefix}roundtrip/bars.parquet"
    client.put_object(Bucket=s3.archive_bucket, Key=key, Body=buffer.getvalue())
    body = client.get_object(Bucket=s3.archive_bucket, Key=key)["Body"].read()
    assert pl.read_parquet(io.BytesIO(body)).equals(frame)


def test_snowflake_merge_through_the_connector(settings):
    conn = snowflake.connector.connect(**settings.snowflake.connect_args())
    cur = conn.cursor()
    schema = f"{settings.postgres.schema_name}_core".upper()
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    cur.execute(f"CREATE OR REPLACE TABLE {schema}.FACT (BAR_ID VARCHAR PRIMARY KEY, CLOSE DOUBLE)")
    cur.execute(f"CREATE OR REPLACE TABLE {schema}.STAGE (BAR_ID VARCHAR, CLOSE DOUBLE)")
    merge = (
        f"MERGE INTO {schema}.FACT t USING {schema}.STAGE s ON t.BAR_ID = s.BAR_ID "
        "WHEN MATCHED THEN UPDATE SET CLOSE = s.CLOSE WHEN NOT MATCHED THEN INSERT (BAR_ID, CLOSE) VALUES (s.BAR_ID, s.CLOSE)"
    )
    cur.executemany(f"INSERT INTO {schema}.STAGE VALUES (%s, %s)", [("BAC-0-60", 14.1), ("SPY-0-60", 168.2)])
    cur.execute(merge)
    cur.execute(merge)  # idempotent
    cur.execute(f"DELETE FROM {schema}.STAGE")
    cur.executemany(f"INSERT INTO {schema}.STAGE VALUES (%s, %s)", [("BAC-0-60", 14.3)])
    cur.execute(merge)
    cur.execute(f"SELECT BAR_ID, CLOSE FROM {schema}.FACT ORDER BY BAR_ID")
    assert cur.fetchall() == [("BAC-0-60", 14.3), ("SPY-0-60", 168.2)]
    conn.close()


def test_topics_are_created_by_the_registry(settings):
    from confluent_kafka.admin import AdminClient

    from tickforge.platform.topics import registry

    topics = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).list_topics(timeout=10).topics
    for spec in registry(settings.streaming.timeframes):
        name = topic_name(settings, spec.name)
        assert name in topics and len(topics[name].partitions) == settings.kafka.partitions
    # Auto-creation is off: a misspelt topic is an error, not a silent new one-partition topic.
    missing = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers}).list_topics("no-such-topic", timeout=5)
    assert missing.topics["no-such-topic"].error is not None
