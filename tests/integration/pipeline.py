"""Helpers for integration tests of the live pipeline: worker processes and topic readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import polars as pl
from confluent_kafka import Consumer, KafkaError

from tickforge.platform.bars.offline import BAR_COLUMNS
from tickforge.platform.contracts import JSON_ENCODER, Bar, DeadLetter
from tickforge.platform.io.kafka import make_producer, marker_watermark, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER


def start_worker(command: str, *args: str, log_dir: Path) -> subprocess.Popen:
    """A worker as its own process (so a test can SIGKILL it), logging at INFO to
    ``log_dir/<command>.log``: assignments, rebalances and aborted transactions are on record
    for a failure's report."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{command}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "tickforge.cli", "stream", command, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TICKFORGE_LOG_LEVEL": os.environ.get("TICKFORGE_LOG_LEVEL", "INFO")},
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def read_topic(
    settings: Settings, name: str, idle_s: float = 3.0, max_s: float = 180.0, expect: int = 1
) -> tuple[list, list[int]]:
    """Every committed data message value of a topic and the marker watermarks seen.

    Waits (up to ``max_s``) for at least ``expect`` data messages, then until the topic has been
    quiet for ``idle_s``: extra or duplicate output would show up in that time.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"reader-{time.time_ns()}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    consumer.subscribe([topic_name(settings, name)])
    values, markers = [], []
    started = last = time.monotonic()
    try:
        while time.monotonic() - started < max_s and (len(values) < expect or time.monotonic() - last < idle_s):
            msgs = consumer.consume(10_000, timeout=0.5)
            for msg in msgs:
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(msg.error()))
                    continue
                wm = marker_watermark(msg)
                if wm is None:
                    values.append(msg.value())
                    last = time.monotonic()  # quiet means no new data (markers go on when idle)
                else:
                    markers.append(wm)
    finally:
        consumer.close()
    return values, markers


def bars_frame(values: list[bytes]) -> pl.DataFrame:
    bars = [msgspec.json.decode(v, type=Bar) for v in values]
    return pl.DataFrame([msgspec.structs.asdict(b) for b in bars], infer_schema_length=None) if bars else pl.DataFrame()


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_bars_equal(actual: pl.DataFrame, expected: pl.DataFrame, rel: float = 1e-9) -> None:
    """Same bar keys exactly once each, fields equal (floats to ``rel``)."""
    keys = ["symbol", "window_start"]
    repeated = actual.filter(actual.select(keys).is_duplicated()).select(keys).unique().sort(keys)
    assert repeated.is_empty(), f"{repeated.height} bars appear more than once: {repeated.head(8).rows()}"
    if actual.height != expected.height:
        missing = expected.join(actual, on=keys, how="anti").select(keys)
        extra = actual.join(expected, on=keys, how="anti").select(keys) if actual.height else actual
        raise AssertionError(
            f"{actual.height} bars, expected {expected.height}; missing {missing.head(5).rows()} "
            f"({missing.height}), extra {extra.head(5).rows() if extra.height else []} ({extra.height})"
        )
    joined = expected.join(actual, on=keys, how="left", suffix="_got")
    for col in BAR_COLUMNS:
        if col in keys:
            continue
        want, got = joined[col], joined[f"{col}_got"]
        assert got.null_count() == 0, f"missing bars ({got.null_count()})"
        if want.dtype in (pl.Float64, pl.Float32):
            bad = ((got - want).abs() > rel * want.abs()).sum()
        else:
            bad = (got != want).sum()
        assert bad == 0, f"{bad} bars differ in {col}"


def produce_dead_letters(
    settings: Settings, letters: list[tuple[DeadLetter | bytes, int]], transaction: str | None = None
) -> None:
    """``(DeadLetter or raw bytes, Kafka timestamp ms)`` pairs on the dead-letter topic, keyed by
    source as the producers key them. ``transaction``: "commit" or "abort" sends them in one
    transaction, as the workers write dead letters; None sends them plainly, as the replay does."""
    topic = topic_name(settings, DEAD_LETTER)
    producer = make_producer(settings, transactional_id=f"test-dead-letters-{time.time_ns()}" if transaction else None)
    if transaction:
        producer.init_transactions(30)
        producer.begin_transaction()
    for letter, kafka_ts_ms in letters:
        if isinstance(letter, DeadLetter):
            producer.produce(topic, JSON_ENCODER.encode(letter), letter.source, timestamp=kafka_ts_ms)
        else:
            producer.produce(topic, letter, b"unknown", timestamp=kafka_ts_ms)
    if transaction == "commit":
        producer.commit_transaction(30)
    elif transaction == "abort":
        producer.flush(30)  # the aborted messages take offsets in the log, as a failed worker's do
        producer.abort_transaction(30)
    assert producer.flush(30) == 0
