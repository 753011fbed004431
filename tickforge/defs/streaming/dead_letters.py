"""``dead_letter_sensor``: the rate of rejected ticks on the dead-letter topic since the last tick.

Each evaluation reads the dead-letter messages between the offsets in its cursor and the
partitions' current ends (``read_committed``: the workers write dead letters inside their
transactions), counts them by reason, and divides the late and bad ones by the time since the
previous evaluation (at least a minute, so a short interval does not inflate the rate). Over
``max_per_minute`` it records an alert in PostgreSQL (``pipeline_alerts``); every evaluation is
recorded as an observation of the dead-letter topic asset (counts, rate, alert flag). The first
evaluation only places the cursor at the topic's end: history is not an alert.

The asset check ``dead_letter_rate_within_limit`` on the dead-letter topic is what a user sees
fail: the sensor reports its evaluation with every observation after the first, and running the
check by hand measures the last ``RECENT_MINUTES`` by the messages' Kafka timestamps.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import msgspec
from confluent_kafka import Message, TopicPartition
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetObservation,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    asset_check,
    sensor,
)

from tickforge.defs.lib.keys import dead_letter_key
from tickforge.defs.postgres.alerts import record_alert
from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.streaming.resources import KafkaResource
from tickforge.platform.contracts import DEAD_LETTER_DECODER, UNREADABLE_DEAD_LETTER
from tickforge.platform.io.kafka import consume_range, topic_offsets
from tickforge.platform.reasons import Reason
from tickforge.platform.topics import DEAD_LETTER

# Reasons that are a tick arriving too late or malformed (duplicates are expected redeliveries).
BAD_REASONS = frozenset(
    {
        Reason.LATE,
        Reason.BAD_TIMESTAMP,
        Reason.MISSING_SYMBOL,
        Reason.BAD_PRICE,
        Reason.BAD_SIZE,
        Reason.BAD_TRADE_ID,
        Reason.MALFORMED_ROW,
        Reason.UNDECODABLE,
        Reason.SCHEMA_VIOLATION,
    }
)
DEFAULT_MAX_PER_MINUTE = 100.0
RATE_CHECK = "dead_letter_rate_within_limit"
RECENT_MINUTES = 5


def late_or_bad(counts: Counter[str]) -> int:
    return sum(n for reason, n in counts.items() if reason in BAD_REASONS)


def read_dead_letters(
    kafka: KafkaResource, start: dict[int, int] | None, deadline_s: float = 20.0
) -> tuple[Counter[str], dict[int, int]]:
    """Reasons counted from ``start`` offsets (None: from the end, counting nothing) to the
    current end of every partition; returns the counts and the new offsets (where time ran
    out, the offsets reached: the next evaluation carries on from there)."""
    topic = kafka.topic(DEAD_LETTER)
    consumer = kafka.consumer("dead-letter-sensor")
    counts: Counter[str] = Counter()

    def count(batch: list[Message]) -> None:
        for msg in batch:
            try:
                counts[DEAD_LETTER_DECODER.decode(msg.value() or b"").reason] += 1
            except (msgspec.DecodeError, msgspec.ValidationError):
                counts[UNREADABLE_DEAD_LETTER] += 1

    try:
        ends = {p: high for p, (_, high) in topic_offsets(consumer, topic).items()}
        if start is None:
            return counts, ends
        return counts, consume_range(consumer, topic, start, ends, count, deadline_s)
    finally:
        consumer.close()


def evaluate(
    kafka: KafkaResource,
    postgres: PostgresResource,
    cursor: str | None,
    max_per_minute: float,
    now_ms: int | None = None,
) -> tuple[dict[str, Any], str]:
    """One evaluation: ``(summary, new cursor)``; records an alert when over the rate."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    state = json.loads(cursor) if cursor else None
    start = {int(p): o for p, o in state["offsets"].items()} if state else None
    counts, ends = read_dead_letters(kafka, start)
    bad = late_or_bad(counts)
    elapsed_ms = max(now_ms - state["at_ms"], 60_000) if state else 60_000
    rate = bad * 60_000 / elapsed_ms
    alert = state is not None and rate > max_per_minute
    summary = {
        "first_evaluation": state is None,
        "dead_letters": sum(counts.values()),
        "late_or_bad": bad,
        "by_reason": dict(counts),
        "per_minute": round(rate, 3),
        "max_per_minute": max_per_minute,
        "alert": alert,
    }
    if alert:
        record_alert(
            postgres,
            "dead_letter_sensor",
            "error",
            f"{bad} late or bad ticks in {elapsed_ms / 60_000:.1f} min ({rate:.1f}/min > {max_per_minute}/min)",
            summary,
            dedup_key=f"dead_letter:{json.dumps(start, sort_keys=True)}",
        )
    new_cursor = json.dumps({"offsets": {str(p): o for p, o in ends.items()}, "at_ms": now_ms})
    return summary, new_cursor


def recent_offsets(kafka: KafkaResource, since_ms: int) -> dict[int, int]:
    """Per partition, the first dead-letter offset with a Kafka timestamp at or after ``since_ms``."""
    topic = kafka.topic(DEAD_LETTER)
    consumer = kafka.consumer("dead-letter-check")
    try:
        ends = {p: high for p, (_, high) in topic_offsets(consumer, topic).items()}
        found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in ends], timeout=10)
        return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}
    finally:
        consumer.close()


def rate_check_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in summary.items() if k != "by_reason"}
    metadata["by_reason"] = MetadataValue.json(summary["by_reason"])
    return metadata


def build_dead_letter_rate_check(max_per_minute: float = DEFAULT_MAX_PER_MINUTE):
    @asset_check(
        asset=dead_letter_key(),
        name=RATE_CHECK,
        description=f"Late or bad ticks on the dead-letter topic at most {max_per_minute}/min (the "
        f"sensor reports it every minute; run by hand it measures the last {RECENT_MINUTES} minutes).",
    )
    def dead_letter_rate_within_limit(kafka: KafkaResource) -> AssetCheckResult:
        now_ms = int(time.time() * 1000)
        since_ms = now_ms - RECENT_MINUTES * 60_000
        counts, _ = read_dead_letters(kafka, recent_offsets(kafka, since_ms))
        bad = late_or_bad(counts)
        rate = bad / RECENT_MINUTES
        summary = {
            "late_or_bad": bad,
            "per_minute": round(rate, 3),
            "max_per_minute": max_per_minute,
            "minutes": RECENT_MINUTES,
            "by_reason": dict(counts),
        }
        return AssetCheckResult(
            passed=rate <= max_per_minute, severity=AssetCheckSeverity.ERROR, metadata=rate_check_metadata(summary)
        )

    return dead_letter_rate_within_limit


def build_dead_letter_sensor(max_per_minute: float = DEFAULT_MAX_PER_MINUTE):
    @sensor(
        name="dead_letter_sensor",
        minimum_interval_seconds=60,
        description=f"Late or bad ticks on the dead-letter topic: alert over {max_per_minute}/min.",
    )
    def dead_letter_sensor(
        context: SensorEvaluationContext, postgres: PostgresResource, kafka: KafkaResource
    ) -> SensorResult:
        summary, cursor = evaluate(kafka, postgres, context.cursor, max_per_minute)
        if summary["alert"]:
            context.log.error("dead-letter rate alert: %s", summary)
        metadata = rate_check_metadata(summary)
        events: list[AssetObservation | AssetCheckEvaluation] = [
            AssetObservation(asset_key=dead_letter_key(), metadata=metadata)
        ]
        if not summary["first_evaluation"]:
            events.append(
                AssetCheckEvaluation(
                    asset_key=dead_letter_key(),
                    check_name=RATE_CHECK,
                    passed=not summary["alert"],
                    metadata=metadata,
                    severity=AssetCheckSeverity.ERROR,
                )
            )
        return SensorResult(cursor=cursor, asset_events=events)

    return dead_letter_sensor
