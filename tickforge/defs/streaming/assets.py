"""The streaming side as external assets: produced outside Dagster, observed for lineage.

ticks topic -> bar topics (one per timeframe) -> golden bar tables in PostgreSQL; the raw trade
landing in object storage also comes from the ticks topic.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetSpec

from tickforge.defs.lib.keys import (
    bar_topic_key,
    dead_letter_key,
    golden_bars_key,
    raw_trades_key,
    ticks_key,
)
from tickforge.platform.bars.timeframes import bar_timeframes
from tickforge.platform.io.postgres import bar_table
from tickforge.platform.topics import TICKS, bar_topic

STREAMING_OWNERS = ["team:market-data"]
STREAMING_GROUP = "streaming"


def streaming_specs(timeframes: Sequence[str], topic_prefix: str, schema: str) -> list[AssetSpec]:
    specs = [
        AssetSpec(
            ticks_key(),
            description=f"Trade and quote ticks on Kafka topic `{topic_prefix}{TICKS}`.",
            kinds={"kafka"},
            owners=STREAMING_OWNERS,
            group_name=STREAMING_GROUP,
            metadata={"topic": f"{topic_prefix}{TICKS}"},
        ),
        AssetSpec(
            dead_letter_key(),
            description=f"Rejected input with a reason on Kafka topic `{topic_prefix}dead-letter` "
            "(observed by `dead_letter_sensor`).",
            deps=[ticks_key()],
            kinds={"kafka"},
            owners=STREAMING_OWNERS,
            group_name=STREAMING_GROUP,
            metadata={"topic": f"{topic_prefix}dead-letter"},
        ),
        AssetSpec(
            raw_trades_key(),
            description="Raw ticks landed by the raw sink (`tickforge.streaming.raw_sink`): "
            "`trades/date=YYYY-MM-DD/hour=HH/<partition>-<first offset>-<last offset>.parquet` "
            "(and `quotes/...`) in the raw bucket, canonical columns, row = Kafka offset.",
            deps=[ticks_key()],
            kinds={"s3", "parquet"},
            owners=STREAMING_OWNERS,
            group_name=STREAMING_GROUP,
        ),
    ]
    for tf in bar_timeframes(timeframes):
        topic = f"{topic_prefix}{bar_topic(tf)}"
        specs.append(
            AssetSpec(
                bar_topic_key(tf),
                description=f"Closed {tf} bars and watermark markers on Kafka topic `{topic}`, "
                "built by the bar worker from the ticks.",
                deps=[ticks_key()],
                kinds={"kafka"},
                owners=STREAMING_OWNERS,
                group_name=STREAMING_GROUP,
                metadata={"topic": topic, "timeframe": tf},
            )
        )
        specs.append(
            AssetSpec(
                golden_bars_key(tf),
                description=f"Golden {tf} bars in PostgreSQL `{schema}.{bar_table(tf)}`, "
                "keyed by (symbol, window_start), upserted whole from the bar topic.",
                deps=[bar_topic_key(tf)],
                kinds={"postgres"},
                owners=STREAMING_OWNERS,
                group_name=STREAMING_GROUP,
                metadata={"table": f"{schema}.{bar_table(tf)}", "timeframe": tf},
            )
        )
    return specs
