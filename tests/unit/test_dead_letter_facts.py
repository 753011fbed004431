"""Dead letters per minute: decoding, bucketing, the pandera schema, the retention guard, and
the dbt manifest being re-parsed when a model changes (no services)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandera.errors
import polars as pl
import pytest

DAY_MS = 1_381_190_400_000  # 2013-10-08 00:00 UTC
NEXT_DAY_MS = DAY_MS + 86_400_000


@dataclass
class FakeMessage:
    """The three things the decoder reads from a confluent_kafka.Message."""

    body: bytes | None
    kafka_ts_ms: int
    key_bytes: bytes | None = None

    def value(self) -> bytes | None:
        return self.body

    def timestamp(self) -> tuple[int, int]:
        return (1, self.kafka_ts_ms)

    def key(self) -> bytes | None:
        return self.key_bytes


def _letter(reason: str, source: str, symbol: str | None = None, ts_ms: int | None = None) -> bytes:
    from tickforge.platform.contracts import JSON_ENCODER, DeadLetter

    return JSON_ENCODER.encode(DeadLetter(reason=reason, source=source, payload="{}", symbol=symbol, ts_ms=ts_ms))


def test_minute_counts_bucket_by_event_time_else_kafka_time():
    from tickforge.defs.snowflake.dead_letter_facts import letter_rows, minute_counts, total_counts

    now_ms = 1_795_000_000_000  # when a replay publishes 2013 data
    batch = [
        FakeMessage(_letter("late", "ticks", "BAC", DAY_MS + 61_500), now_ms),
        FakeMessage(_letter("late", "ticks", "BAC", DAY_MS + 119_999), now_ms),
        FakeMessage(_letter("malformed_row", "f.csv"), DAY_MS + 5_000),  # no event time: Kafka time
        FakeMessage(b"not json", DAY_MS + 6_000, b"http"),
        FakeMessage(None, DAY_MS + 7_000),
        FakeMessage(_letter("late", "ticks", "BAC", DAY_MS - 1), DAY_MS),  # the day before
        FakeMessage(_letter("late", "ticks", "AIG", NEXT_DAY_MS), DAY_MS),  # the day after
        FakeMessage(_letter("bad_price", "f.csv"), now_ms),  # Kafka time outside the day
    ]
    first = minute_counts(letter_rows(batch[:4]), DAY_MS, NEXT_DAY_MS)
    second = minute_counts(letter_rows(batch[4:]), DAY_MS, NEXT_DAY_MS)
    counts = total_counts([first, second])
    assert counts.rows() == [
        (DAY_MS, "malformed_row", "", "f.csv", 1),
        (DAY_MS, "unreadable_dead_letter", "", "", 1),
        (DAY_MS, "unreadable_dead_letter", "", "http", 1),
        (DAY_MS + 60_000, "late", "BAC", "ticks", 2),
    ]
    assert total_counts([]).is_empty() and total_counts([]).schema == counts.schema


def test_schema_rejects_partial_minutes_zero_counts_and_repeated_keys():
    from tickforge.defs.snowflake.dead_letter_facts import MINUTE_SCHEMA, DeadLetterMinutes

    good = [(DAY_MS, "late", "BAC", "ticks", 2)]
    assert DeadLetterMinutes.validate(pl.DataFrame(good, schema=MINUTE_SCHEMA, orient="row")).height == 1
    for rows in (
        [(DAY_MS + 1, "late", "BAC", "ticks", 2)],
        [(DAY_MS, "late", "BAC", "ticks", 0)],
        good + good,
    ):
        with pytest.raises(pandera.errors.SchemaError):
            DeadLetterMinutes.validate(pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row"))


def test_topic_covers_loaded_rows_only_when_no_count_shrank():
    from tickforge.defs.snowflake.dead_letter_facts import MINUTE_SCHEMA, covers

    def frame(*rows):
        return pl.DataFrame(list(rows), schema=MINUTE_SCHEMA, orient="row")

    loaded = frame((DAY_MS, "late", "BAC", "ticks", 2))
    assert covers(frame((DAY_MS, "late", "BAC", "ticks", 3), (DAY_MS, "bad_size", "AIG", "ticks", 1)), loaded)
    assert covers(frame(), frame())
    assert not covers(frame((DAY_MS, "late", "BAC", "ticks", 1)), loaded)  # retention took one
    assert not covers(frame(), loaded)  # retention took the day


def test_dbt_manifest_is_stale_when_a_model_is_newer(tmp_path):
    from tickforge.defs.dbt.assets import manifest_is_stale

    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.sql"
    model.write_text("select 1")
    (tmp_path / "dbt_project.yml").write_text("name: x")
    manifest = tmp_path / "target" / "manifest.json"
    assert manifest_is_stale(manifest, tmp_path)
    manifest.parent.mkdir()
    manifest.write_text("{}")
    os.utime(model, (1_000, 1_000))
    os.utime(tmp_path / "dbt_project.yml", (1_000, 1_000))
    assert not manifest_is_stale(manifest, tmp_path)
    os.utime(model, None)  # edited now, after the manifest's (earlier) time
    os.utime(manifest, (2_000, 2_000))
    assert manifest_is_stale(manifest, tmp_path)
