"""Asset keys of what the streaming side produces, shared by every integration that reads it."""

from __future__ import annotations

from dagster import AssetKey

from tickforge.platform.bars.timeframes import bar_timeframes
from tickforge.platform.io.postgres import bar_table
from tickforge.platform.topics import TICKS, bar_topic


def ticks_key() -> AssetKey:
    return AssetKey(["kafka", TICKS])


def bar_topic_key(timeframe: str) -> AssetKey:
    return AssetKey(["kafka", bar_topic(timeframe).replace(".", "_")])


def golden_bars_key(timeframe: str) -> AssetKey:
    return AssetKey(["postgres", bar_table(timeframe)])


def raw_trades_key() -> AssetKey:
    return AssetKey(["s3", "raw_trades"])


def dead_letter_key() -> AssetKey:
    return AssetKey(["kafka", "dead_letter"])


__all__ = [
    "bar_timeframes",
    "bar_topic_key",
    "dead_letter_key",
    "golden_bars_key",
    "raw_trades_key",
    "ticks_key",
]
