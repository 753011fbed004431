"""The topic registry: every Kafka topic the platform owns, keyed by symbol.

Producers pick the partition themselves with :func:`partition_for` (CRC32 of the symbol, the same
hash librdkafka's default partitioner uses for keyed messages), so a symbol lands on the same
partition number in every topic: the bar worker's output partition matches its input partition,
and ``tickforge bars build --partitions N`` reproduces live per-partition watermarks offline.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tickforge.platform.bars.timeframes import bar_timeframes

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the deployment prefix
    description: str
    retention_ms: int
    cleanup_policy: str = "delete"
    key: str = "symbol"
    partitions: int | None = None  # None: the deployment's default (settings.kafka.partitions)
    extra: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            **self.extra,
        }


def bar_topic(timeframe: str) -> str:
    return f"bars.{timeframe}"


TICKS = "ticks"
BINS = bar_topic("10ms")
SIGNALS = "signals.1s"
PAIRS = "pairs.1m"
DEAD_LETTER = "dead-letter"
ORDERS = "orders"
ORDERS_APPROVED = "orders.approved"
ORDERS_REJECTED = "orders.rejected"
FILLS = "fills"
ORDER_EVENTS = "orders.events"
TRADING_CONTROL = "trading.control"


def registry(timeframes: list[str]) -> list[TopicSpec]:
    """Every topic, for the configured bar timeframes."""
    specs = [
        TopicSpec(TICKS, "Trade and quote ticks (JSON edge messages or column batches)", 7 * DAY_MS),
        TopicSpec(BINS, "10 ms bins with at least one trade", 2 * DAY_MS),
        TopicSpec(SIGNALS, "Indicators per 1 s bar", 30 * DAY_MS),
        TopicSpec(PAIRS, "Pair statistics per minute", 30 * DAY_MS, key="pair"),
        TopicSpec(DEAD_LETTER, "Rejected input with a reason", 30 * DAY_MS, key="source"),
        TopicSpec(ORDERS, "Orders decided by the strategy runners (JSON), keyed by symbol", 30 * DAY_MS),
        TopicSpec(ORDERS_APPROVED, "Orders risk let through (JSON: the order and its decision)", 30 * DAY_MS),
        TopicSpec(ORDERS_REJECTED, "Orders risk refused (JSON: the order, the rule and why)", 30 * DAY_MS),
        TopicSpec(FILLS, "Executions of approved orders by the paper matcher or a broker (JSON)", 30 * DAY_MS),
        TopicSpec(
            ORDER_EVENTS, "Venue events of approved orders: accepted, canceled, expired, rejected (JSON)", 30 * DAY_MS
        ),
        # Compacted, kept forever: every risk instance reads all of it and ends at each scope's latest state.
        TopicSpec(
            TRADING_CONTROL,
            "Trading state set by hand (halt, reduce, resume; JSON), keyed by scope",
            -1,
            cleanup_policy="compact",
            key="scope",
        ),
    ]
    specs += [
        TopicSpec(bar_topic(tf), f"Closed {tf} bars and watermark markers", 30 * DAY_MS)
        for tf in bar_timeframes(timeframes)
    ]
    return specs


def partition_for(symbol: str, partitions: int, pinned: Sequence[str] = ()) -> int:
    """The partition of a symbol's messages in every topic with ``partitions`` partitions.

    ``pinned`` hot symbols get a partition of their own each (the i-th pinned symbol partition i),
    and every other symbol is spread by CRC32 over the partitions left; without pins it is CRC32
    mod ``partitions``, as librdkafka's default partitioner places keyed messages."""
    if not pinned:
        return zlib.crc32(symbol.encode()) % partitions
    if len(pinned) >= partitions:
        raise ValueError(f"{len(pinned)} pinned symbols leave none of {partitions} partitions for the others")
    if symbol in pinned:
        return list(pinned).index(symbol)
    return len(pinned) + zlib.crc32(symbol.encode()) % (partitions - len(pinned))


@dataclass(frozen=True)
class PartitionLoad:
    partition: int
    ticks: int
    share: float  # of all ticks
    symbols: tuple[str, ...]  # busiest first


def partition_plan(
    ticks_by_symbol: Mapping[str, int], partitions: int, pinned: Sequence[str] = ()
) -> list[PartitionLoad]:
    """The load each partition would carry: what a day's ticks per symbol put on each."""
    members: dict[int, list[tuple[int, str]]] = {p: [] for p in range(partitions)}
    for symbol, count in ticks_by_symbol.items():
        members[partition_for(symbol, partitions, pinned)].append((count, symbol))
    total = sum(ticks_by_symbol.values()) or 1
    plan = []
    for p, rows in members.items():
        rows.sort(key=lambda r: (-r[0], r[1]))
        load = sum(c for c, _ in rows)
        plan.append(PartitionLoad(p, load, load / total, tuple(s for _, s in rows)))
    return plan


def hot_symbols(ticks_by_symbol: Mapping[str, int], partitions: int) -> list[str]:
    """The symbols worth a partition of their own: each carries more than an even share
    (1/partitions of all ticks), busiest first, leaving at least one partition for the rest."""
    total = sum(ticks_by_symbol.values())
    ranked = sorted(ticks_by_symbol, key=lambda s: (-ticks_by_symbol[s], s))
    return [s for s in ranked if ticks_by_symbol[s] * partitions > total][: partitions - 1]
