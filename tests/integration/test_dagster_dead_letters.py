"""``snowflake_dead_letter_facts`` on the real local stack (Kafka, Snowflake stand-in).

Dead letters of 2013-10-08 as the workers write them (in transactions, with event time; one
transaction aborted), published now as a replay of that day would, and letters of the
neighbouring days are counted per minute into CORE.FACT_DEAD_LETTERS_1M. Dead letters without
event time (the replay's file rejects) and an unreadable message count at their Kafka time, so
they are published on yesterday (a 2013 Kafka time would be past the topic's retention) and
loaded with yesterday's partition. A rerun changes nothing, a new dead letter of the day is
picked up, and once retention has emptied the topic the loaded day is kept and the check warns.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.integration.pipeline import produce_dead_letters

pytestmark = pytest.mark.integration

DAY = "2013-10-08"
DAY_MS = 1_381_190_400_000
MIN = 60_000
T1430 = DAY_MS + (14 * 60 + 30) * MIN


@pytest.fixture()
def dl_settings(settings, monkeypatch):
    from tickforge.platform.settings import Settings

    monkeypatch.setenv("TICKFORGE_SNOWFLAKE__DATABASE", f"TF_{uuid.uuid4().hex[:8].upper()}")
    return Settings()


def _letter(reason: str, source: str, symbol: str | None = None, ts_ms: int | None = None):
    from tickforge.platform.contracts import DeadLetter

    return DeadLetter(reason=reason, source=source, payload="{}", symbol=symbol, ts_ms=ts_ms)


def _loaded(s, day: str = DAY) -> list[tuple]:
    import snowflake.connector

    from tickforge.defs.lib.partitions import day_bounds_ms

    start, end = day_bounds_ms(day)
    with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
        return (
            conn.cursor()
            .execute(
                "SELECT MINUTE_START, REASON, SYMBOL, SOURCE, DEAD_LETTER_COUNT, LOADED_AT "
                f"FROM CORE.FACT_DEAD_LETTERS_1M WHERE MINUTE_START >= {start} AND MINUTE_START < {end} "
                "ORDER BY MINUTE_START, REASON, SYMBOL, SOURCE"
            )
            .fetchall()
        )


def _materialize(s, day: str = DAY):
    from dagster import DagsterInstance, materialize

    from tickforge.defs.resources import resources_for
    from tickforge.defs.snowflake.dead_letter_facts import build_dead_letter_facts

    result = materialize(
        [build_dead_letter_facts(s.kafka.topic_prefix)],
        partition_key=day,
        instance=DagsterInstance.ephemeral(),
        resources={name: resources_for(s, env_secrets=False)[name] for name in ("snowflake", "kafka")},
    )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    return result.asset_materializations_for_node("snowflake_dead_letter_facts")[0].metadata, check


def test_dead_letter_facts_count_the_day_idempotently(dl_settings):
    from tickforge.defs.lib.partitions import day_bounds_ms
    from tickforge.platform.io.raw_layout import utc_day

    s = dl_settings
    ticks = "t.ticks"
    now_ms = int(time.time() * 1000)
    yesterday = utc_day(now_ms - 86_400_000)
    noon = day_bounds_ms(yesterday)[0] + 12 * 60 * MIN
    produce_dead_letters(
        s,
        [
            *((_letter("late", ticks, "BAC", T1430 + 5_000 + i), now_ms) for i in range(3)),
            (_letter("late", ticks, "BAC", T1430 + MIN), now_ms),
            (_letter("bad_price", ticks, "AIG", T1430 + 59_999), now_ms),
            (_letter("late", ticks, "BAC", DAY_MS - 1), now_ms),  # the day before
            (_letter("late", ticks, "BAC", DAY_MS + 86_400_000), now_ms),  # the day after
        ],
        transaction="commit",
    )
    produce_dead_letters(s, [(_letter("late", ticks, "BAC", T1430), now_ms)] * 5, transaction="abort")
    produce_dead_letters(
        s,
        [
            (_letter("malformed_row", "trades.csv"), noon + 1),  # a replay's file rejects
            (_letter("malformed_row", "trades.csv"), noon + 2),
            (_letter("malformed_row", "trades.csv"), now_ms),  # published today
            (b"\xffnot a dead letter", noon),
        ],
    )

    meta, check = _materialize(s, yesterday)
    assert check.passed and meta["dead_letters"].value == 3
    assert [r[:5] for r in _loaded(s, yesterday)] == [
        (noon, "malformed_row", "", "trades.csv", 2),
        (noon, "unreadable_dead_letter", "", "unknown", 1),
    ]

    meta, check = _materialize(s)
    expected = [
        (T1430, "bad_price", "AIG", ticks, 1),
        (T1430, "late", "BAC", ticks, 3),
        (T1430 + MIN, "late", "BAC", ticks, 1),
    ]
    first = _loaded(s)
    assert [r[:5] for r in first] == expected
    assert len({r[5] for r in first}) == 1  # one LOADED_AT per load
    assert check.passed and check.metadata["loaded_dead_letters"].value == 5
    assert meta["messages_read"].value == 11 and meta["inserted"].value == 3 and meta["deleted"].value == 0
    assert meta["by_reason"].value == {"bad_price": 1, "late": 4}

    # A rerun changes nothing, not even LOADED_AT.
    meta, check = _materialize(s)
    assert check.passed and meta["changed"].value == 0
    assert _loaded(s) == first

    # One more late tick of the day: the day is replaced, counts and LOADED_AT move.
    produce_dead_letters(s, [(_letter("late", ticks, "BAC", T1430 + 7_000), now_ms)], transaction="commit")
    meta, check = _materialize(s)
    assert check.passed and meta["deleted"].value == 3 and meta["inserted"].value == 3
    second = _loaded(s)
    assert [r[:5] for r in second] == [expected[0], (T1430, "late", "BAC", ticks, 4), expected[2]]
    assert second[0][5] > first[0][5]

    # Retention deletes the topic's messages: the warehouse keeps the day, the check warns.
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    from tickforge.platform.io.kafka import client_config, topic_name
    from tickforge.platform.topics import DEAD_LETTER

    topic = topic_name(s, DEAD_LETTER)
    admin = AdminClient(client_config(s))
    # OFFSET_END (-1): delete everything before each partition's high watermark.
    ends = [TopicPartition(topic, p, -1) for p in range(s.kafka.partitions)]
    for future in admin.delete_records(ends).values():
        future.result()
    meta, check = _materialize(s)
    assert meta["kept_loaded_rows"].value is True and meta["changed"].value == 0 and meta["rows"].value == 0
    assert not check.passed and check.severity.value == "WARN"
    assert meta["partitions_trimmed_by_retention"].value
    assert _loaded(s) == second
