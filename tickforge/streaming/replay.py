"""Replay trade and quote files to the tick topic, keyed by symbol, in event-time order.

Two encodings: ``batch`` (column batches, one symbol per message: what the throughput targets
need) and ``json`` (one edge message per tick, exactly in file order per partition). At the end a
watermark marker at the end of the last tick's UTC day (plus the allowed lateness) goes to every
partition, like a bounded source's final watermark, so the workers close the session's last
windows without waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
from confluent_kafka import KafkaError, Producer

from tickforge.platform.contracts import (
    BATCH_ENCODER,
    CONTENT_TYPE_BATCH,
    CONTENT_TYPE_HEADER,
    JSON_ENCODER,
    DeadLetter,
    Quote,
    QuoteBatch,
    Trade,
    TradeBatch,
)
from tickforge.platform.io.files import TickFile
from tickforge.platform.io.kafka import encode_marker, make_producer, marker_headers, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DAY_MS, DEAD_LETTER, TICKS, partition_for

log = logging.getLogger(__name__)

_BATCH_HEADERS: list[tuple[str, str | bytes | None]] = [(CONTENT_TYPE_HEADER, CONTENT_TYPE_BATCH.encode())]


@dataclass
class ReplayStats:
    trades: int = 0
    quotes: int = 0
    messages: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    end_watermark: int | None = None

    @property
    def ticks_per_s(self) -> float:
        return (self.trades + self.quotes) / self.seconds if self.seconds else 0.0


def merged_ticks(trades: TickFile, quotes: TickFile | None) -> pl.DataFrame:
    """Trades and quotes in one event-time ordered frame (stable: file order within a ms)."""
    t = trades.data.select("ts_ms", "symbol", "price", "size", "trade_id", kind=pl.lit(0, pl.Int8), row=pl.col("row"))
    if quotes is None:
        return t
    q = quotes.data.select(
        "ts_ms",
        "symbol",
        price=pl.lit(None, pl.Float64),
        size=pl.lit(None, pl.Float64),
        trade_id=pl.lit(None, pl.Int64),
        kind=pl.lit(1, pl.Int8),
        row=pl.col("row"),
        bid="bid",
        ask="ask",
        bid_size="bid_size",
        ask_size="ask_size",
    )
    t = t.with_columns(
        bid=pl.lit(None, pl.Float64),
        ask=pl.lit(None, pl.Float64),
        bid_size=pl.lit(None, pl.Float64),
        ask_size=pl.lit(None, pl.Float64),
    )
    # Quotes first within a millisecond: a quote is in force for trades at the same ms.
    return pl.concat([q, t.select(q.columns)]).sort(["ts_ms", "kind"], descending=[False, True], maintain_order=True)


def batch_messages(chunk: pl.DataFrame, partition_of: Callable[[str], int]) -> Iterator[tuple[str, int, bytes]]:
    """(key, partition, value): a chunk's quotes per symbol, then its trades per partition.

    Quotes go first: they never move the watermark, and a quote must be in force for the trades
    at or after its time. Trades stay in stream order within a partition (one batch for all the
    partition's symbols), so per-partition lateness is exactly as in one-message-per-tick mode.
    """
    quotes = chunk.filter(pl.col("kind") == 1)
    for (symbol,), frame in quotes.group_by(["symbol"], maintain_order=True):
        msg = QuoteBatch.from_arrays(
            symbol,
            frame["ts_ms"].to_numpy(),
            *(frame[c].fill_null(np.nan).to_numpy() for c in ("bid", "ask", "bid_size", "ask_size")),
        )
        yield symbol, partition_of(symbol), BATCH_ENCODER.encode(msg)
    trades = chunk.filter(pl.col("kind") == 0)
    if trades.is_empty():
        return
    names = trades["symbol"].unique(maintain_order=True).to_list()
    parts = pl.Series([partition_of(s) for s in names])
    trades = trades.with_columns(
        part=pl.col("symbol").replace_strict(names, parts, return_dtype=pl.Int32),
        idx=pl.col("symbol").replace_strict(names, list(range(len(names))), return_dtype=pl.Int32),
    )
    for (partition,), frame in trades.group_by(["part"], maintain_order=True):
        local = frame["symbol"].unique(maintain_order=True).to_list()
        index = frame["symbol"].replace_strict(local, list(range(len(local))), return_dtype=pl.Int32)
        ids = frame["trade_id"]
        batch = TradeBatch.from_rows(
            local,
            index.to_numpy(),
            frame["ts_ms"].to_numpy(),
            frame["price"].to_numpy(),
            frame["size"].to_numpy(),
            None if ids.null_count() == len(ids) else ids.fill_null(-1).to_numpy(),
        )
        yield ",".join(local), partition, BATCH_ENCODER.encode(batch)


def _json_messages(chunk: pl.DataFrame, partition_of: Callable[[str], int]) -> Iterator[tuple[str, int, bytes]]:
    for row in chunk.iter_rows(named=True):
        msg: Trade | Quote
        if row["kind"] == 0:
            msg = Trade(
                ts_ms=row["ts_ms"], symbol=row["symbol"], price=row["price"], size=row["size"], trade_id=row["trade_id"]
            )
        else:
            msg = Quote(
                ts_ms=row["ts_ms"],
                symbol=row["symbol"],
                bid=row["bid"],
                ask=row["ask"],
                bid_size=row["bid_size"],
                ask_size=row["ask_size"],
            )
        yield row["symbol"], partition_of(row["symbol"]), JSON_ENCODER.encode(msg)


def replay(
    settings: Settings,
    trades: TickFile,
    quotes: TickFile | None = None,
    speed: float | None = None,
    encoding: str = "batch",
    chunk_rows: int = 20_000,
    end_marker: bool = True,
    progress: Callable[[int], None] | None = None,
    producer: Producer | None = None,
    rate: float | None = None,
) -> ReplayStats:
    """Publish the files; ``speed`` None replays as fast as possible, else event time x speed.

    ``rate`` caps the pace at that many ticks per second (a steady offered load).
    """
    producer = producer or make_producer(settings)
    topic = topic_name(settings, TICKS)
    partitions = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    if partitions == 0:
        raise RuntimeError(f"topic {topic} does not exist: run `tickforge topics apply`")
    stats = ReplayStats()
    stats.dead_letters = _publish_file_rejects(settings, producer, trades, quotes)
    ticks = merged_ticks(trades, quotes)
    encode = batch_messages if encoding == "batch" else _json_messages
    headers = _BATCH_HEADERS if encoding == "batch" else None
    partitions_by_symbol: dict[str, int] = {}
    # A message the broker never took (timed out on a loaded machine, refused) leaves the queue
    # like a delivered one: flush() alone would report a replay with a hole in it as complete.
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    def partition_of(symbol: str) -> int:
        p = partitions_by_symbol.get(symbol)
        if p is None:
            p = partitions_by_symbol[symbol] = partition_for(symbol, partitions, settings.kafka.pinned_symbols)
        return p

    started = time.perf_counter()
    first_ts = ticks["ts_ms"][0] if ticks.height else 0
    for offset in range(0, ticks.height, chunk_rows):
        chunk = ticks.slice(offset, chunk_rows)
        due = 0.0
        if speed:
            due = (chunk["ts_ms"][0] - first_ts) / speed / 1000.0
        if rate:
            due = max(due, offset / rate)
        wait = due - (time.perf_counter() - started)
        if wait > 0:
            time.sleep(wait)
        for key, p, value in encode(chunk, partition_of):
            while True:
                try:
                    producer.produce(topic, value, key, partition=p, headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)  # local queue full: let deliveries drain
            stats.messages += 1
        producer.poll(0)
        kinds = chunk["kind"]
        stats.quotes += int(kinds.sum())
        stats.trades += chunk.height - int(kinds.sum())
        if progress is not None:
            progress(offset + chunk.height)
    if end_marker and ticks.height:
        last = ticks["ts_ms"].max()
        assert isinstance(last, int), "ts_ms is an Int64 column"
        # Past the day's end by the allowed lateness: that closes every window ending by then.
        stats.end_watermark = last - last % DAY_MS + DAY_MS + settings.streaming.allowed_lateness_ms
        for p in range(partitions):
            producer.produce(
                topic,
                encode_marker(stats.end_watermark),
                None,
                partition=p,
                headers=marker_headers(),
                on_delivery=delivered,
            )
    remaining = producer.flush(60)
    if remaining or failed:
        raise RuntimeError(f"{remaining + len(failed)} messages not delivered: {failed[:3]}")
    stats.seconds = time.perf_counter() - started
    return stats


def _publish_file_rejects(settings: Settings, producer: Producer, *files: TickFile | None) -> int:
    """Rows the readers rejected (malformed, unparseable) go to the dead-letter topic."""
    topic = topic_name(settings, DEAD_LETTER)
    count = 0
    for tick_file in files:
        if tick_file is None:
            continue
        for row in tick_file.dead_letters.iter_rows(named=True):
            letter = DeadLetter(
                reason=row["reason"],
                source=tick_file.source,
                payload=row["raw"] or "",
                offset=row["row"],
                detail=row["detail"],
            )
            producer.produce(topic, JSON_ENCODER.encode(letter), tick_file.source)
            count += 1
    return count
