"""``snowflake_dead_letter_facts``: one UTC day of dead letters per minute in ``CORE.FACT_DEAD_LETTERS_1M``.

Source: the dead-letter topic (the ``kafka/dead_letter`` external asset), read ``read_committed``
(the workers write dead letters inside their transactions) from the start of every partition
to its last stable offset when the step starts. The whole retained topic is read: a dead letter
counts in the minute of its event time (``ts_ms``), and event time has no bound relation to the
Kafka timestamp (a replay of 2013 trades publishes today), so there is no offset to seek to. A
dead letter without ``ts_ms`` (a malformed file row) counts in the minute of its Kafka
timestamp; a message that is not a ``DeadLetter`` counts as ``unreadable_dead_letter`` there.

Each consume batch is bucketed and aggregated at once (polars), so memory follows the day's
(minute, reason, symbol, source) keys, not the topic's size. The day's frame is validated with a
pandera schema, then loaded as ``RAW.TICKS`` is: nothing is written when the day's rows already
equal it (a rerun changes nothing, not even ``LOADED_AT``), else one transaction deletes the
day's rows and inserts the frame (:func:`~tickforge.defs.lib.snowflake.replace_slice`).

Dead letters are only ever appended, so a day's counts only grow while the topic holds them.
The topic keeps 30 days (by Kafka time): a later backfill would find fewer dead letters than were
loaded, and replacing the day would delete history. When the topic no longer covers the loaded
rows, the day is left as it is and the check beside the asset warns.
"""

from collections.abc import Sequence
from typing import Any

import msgspec
import pandera.polars as pa
import polars as pl
from confluent_kafka import Message
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_snowflake import SnowflakeResource
from pandera.polars import PolarsData

from tickforge.defs.lib.keys import dead_letter_key
from tickforge.defs.lib.partitions import daily_partitions, day_bounds_ms
from tickforge.defs.lib.snowflake import ddl_statements, replace_slice
from tickforge.defs.streaming.resources import KafkaResource
from tickforge.platform.contracts import DEAD_LETTER_DECODER, UNREADABLE_DEAD_LETTER
from tickforge.platform.io.kafka import consume_range, topic_offsets
from tickforge.platform.topics import DEAD_LETTER

FACT_DEAD_LETTERS = "CORE.FACT_DEAD_LETTERS_1M"
FACT_COLUMNS = ("MINUTE_START", "REASON", "SYMBOL", "SOURCE", "DEAD_LETTER_COUNT")
FACT_TYPES = ("NUMBER(38, 0)", "VARCHAR", "VARCHAR", "VARCHAR", "NUMBER(38, 0)")
DEAD_LETTER_FACTS_CHECK = "dead_letter_facts_match_topic"
MINUTE_MS = 60_000
# Generous: the whole retained topic is read every night (see the module doc).
READ_DEADLINE_S = 900.0

KEY_COLUMNS = ("minute_start", "reason", "symbol", "source")
# One decoded dead letter: event time (null when none), Kafka time, reason, symbol ('' when none), source.
LETTER_SCHEMA = pl.Schema(
    {"ts_ms": pl.Int64, "kafka_ts_ms": pl.Int64, "reason": pl.String, "symbol": pl.String, "source": pl.String}
)
MINUTE_SCHEMA = pl.Schema(
    {"minute_start": pl.Int64, "reason": pl.String, "symbol": pl.String, "source": pl.String, "dead_letters": pl.Int64}
)


class DeadLetterMinutes(pa.DataFrameModel):
    """One row per (minute, reason, symbol, source): the dead letters counted there."""

    minute_start: int = pa.Field(ge=0, description="start of the minute, epoch ms")
    reason: str
    symbol: str = pa.Field(description="'' when the dead letter names no symbol")
    source: str
    dead_letters: int = pa.Field(gt=0, description="a key without dead letters has no row")

    class Config:
        strict = True
        coerce = True
        unique = list(KEY_COLUMNS)

    @pa.check("minute_start", name="whole_minute")
    def whole_minute(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key) % MINUTE_MS == 0)


def letter_rows(messages: Sequence[Message]) -> pl.DataFrame:
    """The dead letters of a consume batch as :data:`LETTER_SCHEMA` rows."""
    rows: list[tuple[int | None, int, str, str, str]] = []
    for msg in messages:
        kafka_ts_ms = msg.timestamp()[1]
        try:
            letter = DEAD_LETTER_DECODER.decode(msg.value() or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            # Producers key dead letters by their source: the best one left to name.
            source = (msg.key() or b"").decode("utf-8", "replace")
            rows.append((None, kafka_ts_ms, UNREADABLE_DEAD_LETTER, "", source))
            continue
        rows.append((letter.ts_ms, kafka_ts_ms, letter.reason, letter.symbol or "", letter.source))
    return pl.DataFrame(rows, schema=LETTER_SCHEMA, orient="row")


def minute_counts(letters: pl.DataFrame, start_ms: int, end_ms: int) -> pl.DataFrame:
    """Dead letters per (minute, reason, symbol, source) for minutes in ``[start_ms, end_ms)``;
    the minute is the event time's, else the Kafka timestamp's."""
    minute = pl.coalesce("ts_ms", "kafka_ts_ms") // MINUTE_MS * MINUTE_MS
    return (
        letters.with_columns(minute_start=minute)
        .filter((pl.col("minute_start") >= start_ms) & (pl.col("minute_start") < end_ms))
        .group_by(KEY_COLUMNS)
        .agg(dead_letters=pl.len().cast(pl.Int64))
        .select(MINUTE_SCHEMA.names())
    )


def total_counts(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Per-batch counts added up per key, sorted by key (the order the loaded rows compare in)."""
    frame = pl.concat([pl.DataFrame(schema=MINUTE_SCHEMA), *parts])
    return frame.group_by(KEY_COLUMNS).agg(pl.col("dead_letters").sum()).select(MINUTE_SCHEMA.names()).sort(KEY_COLUMNS)


def read_day_counts(
    kafka: KafkaResource, start_ms: int, end_ms: int, deadline_s: float = READ_DEADLINE_S
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The dead-letter topic read whole, counted for the minutes of ``[start_ms, end_ms)``, and
    what was read (messages, retention: partitions whose first offsets were deleted)."""
    topic = kafka.topic(DEAD_LETTER)
    # Reads from the earliest offset: retention may delete the first ones between listing and reading.
    consumer = kafka.consumer("dead-letter-facts")
    parts: list[pl.DataFrame] = []
    read = 0

    def add(batch: list[Message]) -> None:
        nonlocal read
        read += len(batch)
        parts.append(minute_counts(letter_rows(batch), start_ms, end_ms))

    try:
        offsets = topic_offsets(consumer, topic)
        ends = {p: high for p, (_, high) in offsets.items()}
        reached = consume_range(consumer, topic, {p: low for p, (low, _) in offsets.items()}, ends, add, deadline_s)
    finally:
        consumer.close()
    behind = {p: ends[p] - reached[p] for p in ends if reached[p] < ends[p]}
    if behind:
        # A partial read would load partial counts: fail, the next run reads again.
        raise RuntimeError(f"{topic} not read to its end in {deadline_s:.0f} s (offsets left: {behind})")
    trimmed = sorted(p for p, (low, _) in offsets.items() if low > 0)
    return total_counts(parts), {"messages_read": read, "partitions_trimmed_by_retention": MetadataValue.json(trimmed)}


def loaded_counts(cur: Any, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The day's rows of the fact table as a :data:`MINUTE_SCHEMA` frame, sorted by key."""
    rows = cur.execute(
        f"SELECT {', '.join(FACT_COLUMNS)} FROM {FACT_DEAD_LETTERS} "
        f"WHERE MINUTE_START >= {int(start_ms)} AND MINUTE_START < {int(end_ms)}"
    ).fetchall()
    return pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row").sort(KEY_COLUMNS)


def covers(counts: pl.DataFrame, loaded: pl.DataFrame) -> bool:
    """Every loaded key is in ``counts`` with at least its loaded count. Dead letters are only
    appended, so anything less means the topic lost some of the day's (retention)."""
    joined = loaded.join(counts, on=list(KEY_COLUMNS), how="left", suffix="_topic")
    return joined.filter(pl.col("dead_letters_topic").fill_null(0) < pl.col("dead_letters")).is_empty()


def load_day(
    log: Any, snowflake: SnowflakeResource, start_ms: int, end_ms: int, counts: pl.DataFrame
) -> dict[str, Any]:
    """Make the day's rows equal ``counts`` unless they already are, or the topic no longer
    covers them; returns what was done."""
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        for statement in ddl_statements(snowflake.database):
            cur.execute(statement)
        loaded = loaded_counts(cur, start_ms, end_ms)
        if loaded.equals(counts):
            return {"deleted": 0, "inserted": 0, "changed": 0, "kept_loaded_rows": False}
        if not covers(counts, loaded):
            log.warning(
                "[%s, %s): the dead-letter topic holds fewer dead letters than %s (retention?): "
                "keeping the %d loaded rows",
                start_ms,
                end_ms,
                FACT_DEAD_LETTERS,
                loaded.height,
            )
            return {"deleted": 0, "inserted": 0, "changed": 0, "kept_loaded_rows": True}
        where = f"MINUTE_START >= {int(start_ms)} AND MINUTE_START < {int(end_ms)}"
        deleted = replace_slice(cur, FACT_DEAD_LETTERS, where, FACT_COLUMNS, FACT_TYPES, counts.rows())
    log.info("[%s, %s): %s replaced %d rows with %d", start_ms, end_ms, FACT_DEAD_LETTERS, deleted, counts.height)
    return {
        "deleted": deleted,
        "inserted": counts.height,
        "changed": deleted + counts.height,
        "kept_loaded_rows": False,
    }


def facts_match_counts(
    snowflake: SnowflakeResource, start_ms: int, end_ms: int, counts: pl.DataFrame, kept: bool
) -> AssetCheckResult:
    """The day's rows equal the topic's counts, every count positive. Rows kept because the topic
    lost dead letters to retention are a warning: the warehouse is then the only full record."""
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        cur.execute(f"USE DATABASE {snowflake.database}")
        loaded = loaded_counts(cur, start_ms, end_ms)
    positive = bool((loaded["dead_letters"] > 0).all())
    return AssetCheckResult(
        check_name=DEAD_LETTER_FACTS_CHECK,
        passed=loaded.equals(counts) and positive,
        severity=AssetCheckSeverity.WARN if kept else AssetCheckSeverity.ERROR,
        metadata={
            "topic_rows": counts.height,
            "loaded_rows": loaded.height,
            "topic_dead_letters": int(counts["dead_letters"].sum()),
            "loaded_dead_letters": int(loaded["dead_letters"].sum()),
            "all_counts_positive": positive,
            "kept_loaded_rows": kept,
        },
    )


def build_dead_letter_facts(topic_prefix: str) -> AssetsDefinition:
    """The asset, reading the dead-letter topic through the ``kafka`` resource (``topic_prefix``
    only names the topic in the description)."""
    topic = f"{topic_prefix}{DEAD_LETTER}"

    @asset(
        name="snowflake_dead_letter_facts",
        partitions_def=daily_partitions,
        deps=[dead_letter_key()],
        kinds={"kafka", "snowflake", "python"},
        owners=["team:analytics-platform"],
        group_name="warehouse",
        description=f"The day's dead letters from `{topic}` counted per minute (event time, else Kafka "
        f"time), reason, symbol and source in {FACT_DEAD_LETTERS}; the day is replaced in one "
        "transaction, left alone when unchanged, and kept when the topic has lost some to retention.",
        metadata={"table": FACT_DEAD_LETTERS, "topic": topic},
        check_specs=[
            AssetCheckSpec(
                DEAD_LETTER_FACTS_CHECK,
                asset="snowflake_dead_letter_facts",
                description=f"The day's {FACT_DEAD_LETTERS} rows equal the topic's counts per minute, "
                "reason, symbol and source, every count positive (a warning when rows were kept "
                "because the topic lost dead letters to retention).",
            )
        ],
    )
    def snowflake_dead_letter_facts(
        context: AssetExecutionContext, snowflake: SnowflakeResource, kafka: KafkaResource
    ) -> MaterializeResult:
        day = context.partition_key
        start_ms, end_ms = day_bounds_ms(day)
        counts, read = read_day_counts(kafka, start_ms, end_ms)
        counts = DeadLetterMinutes.validate(counts)
        done = load_day(context.log, snowflake, start_ms, end_ms, counts)
        check = facts_match_counts(snowflake, start_ms, end_ms, counts, done["kept_loaded_rows"])
        by_reason = counts.group_by("reason").agg(pl.col("dead_letters").sum()).sort("reason")
        return MaterializeResult(
            metadata={
                "day": day,
                **read,
                **done,
                "rows": counts.height,
                "dead_letters": int(counts["dead_letters"].sum()),
                "by_reason": MetadataValue.json(dict(by_reason.iter_rows())),
            },
            check_results=[check],
        )

    return snowflake_dead_letter_facts
