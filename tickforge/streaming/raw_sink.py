"""Raw landing sink: the tick topic as hourly Parquet objects in the raw bucket, exactly once.

Layout (:func:`tickforge.platform.io.raw_layout.object_key`: one object per input partition,
flushed offset range, kind and UTC hour of ``ts_ms``)::

    s3://<raw_bucket>/trades/date=YYYY-MM-DD/hour=HH/<partition>-<first_offset>-<last_offset>.parquet
    s3://<raw_bucket>/quotes/date=YYYY-MM-DD/hour=HH/<partition>-<first_offset>-<last_offset>.parquet

Partition and offsets are zero padded (``0003-00000000000000001234-...``) so key order is offset
order. Columns are the canonical ones of :mod:`tickforge.platform.io.files` (``TRADE_SCHEMA`` /
``QUOTE_SCHEMA``) with ``row`` = the Kafka offset of the message the tick came in; rows of one
message keep their order in it. ``first_offset``/``last_offset`` are the offsets of the first and
last message contributing rows to that object. Decoding is
:func:`tickforge.streaming.codec.decode_tick_message`; watermark markers and undecodable messages
carry no ticks and are skipped (the bar worker dead-letters undecodable input: doing it here too
would count it twice). Ticks are landed as received: validity, duplicates and lateness are the
bar builder's and the reconciliation oracle's business.

Exactly once per offset range. A flush of partition ``p`` covering messages ``[a, b]``:

1. commits offset ``a`` with metadata ``{"flush_to": b}`` (the plan),
2. writes the objects, whose names and contents depend only on the messages ``[a, b]``,
3. commits offset ``b + 1`` (no metadata).

A crash after 1 makes the next owner of ``p`` read the plan and cut its first flush at exactly
``b``, so a redelivery rewrites the very same objects (same names, same bytes); a crash before 1
wrote nothing. Offsets are never committed past data that is not yet in object storage.
"""

from __future__ import annotations

import io
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from tickforge.platform.contracts import Quote, QuoteBatch, Trade, TradeBatch
from tickforge.platform.io.files import QUOTE_SCHEMA, TRADE_SCHEMA
from tickforge.platform.io.kafka import make_consumer, marker_watermark, retry_retriable, topic_name
from tickforge.platform.io.raw_layout import object_key
from tickforge.platform.settings import Settings
from tickforge.platform.topics import TICKS
from tickforge.streaming.codec import Undecodable, decode_tick_message

log = logging.getLogger(__name__)

NAME = "raw-sink"
KINDS = ("trades", "quotes")
HOUR_MS = 3_600_000


class FlushPlan(msgspec.Struct, frozen=True):
    flush_to: int  # last offset of the flush in progress when this was committed


_PLAN_DECODER = msgspec.json.Decoder(FlushPlan)


def _ticks_of(msg: Message) -> tuple[str, dict[str, Any]] | None:
    """``(kind, columns)`` of a tick message; None for markers and undecodable messages."""
    if marker_watermark(msg) is not None:
        return None
    try:
        tick = decode_tick_message(msg.value())
    except Undecodable as exc:
        log.debug("skipped", extra={"offset": msg.offset(), "reason": exc.reason})
        return None
    if isinstance(tick, TradeBatch):
        ts, price, size, ids = tick.arrays()
        names, index = tick.row_symbols()
        symbols = [names[0]] * len(ts) if index is None else np.asarray(names, dtype=object)[index].tolist()
        # Replay fills missing ids with -1 in a batch that has some (the builder's "no id").
        return "trades", {"ts_ms": ts, "symbol": symbols, "price": price, "size": size, "trade_id": ids}
    if isinstance(tick, Trade):
        return "trades", {
            "ts_ms": np.array([tick.ts_ms], np.int64),
            "symbol": [tick.symbol],
            "price": np.array([tick.price]),
            "size": np.array([tick.size]),
            "trade_id": None if tick.trade_id is None else np.array([tick.trade_id], np.int64),
        }
    if isinstance(tick, QuoteBatch):
        ts, bid, ask, bid_size, ask_size = tick.arrays()
        return "quotes", {
            "ts_ms": ts,
            "symbol": [tick.symbol] * len(ts),
            "bid": bid,
            "ask": ask,
            "bid_size": bid_size,
            "ask_size": ask_size,
        }
    assert isinstance(tick, Quote)
    nan = float("nan")
    return "quotes", {
        "ts_ms": np.array([tick.ts_ms], np.int64),
        "symbol": [tick.symbol],
        "bid": np.array([tick.bid]),
        "ask": np.array([tick.ask]),
        "bid_size": np.array([nan if tick.bid_size is None else tick.bid_size]),
        "ask_size": np.array([nan if tick.ask_size is None else tick.ask_size]),
    }


def _frame(kind: str, offset: int, cols: dict[str, Any]) -> pl.DataFrame:
    n = len(cols["ts_ms"])
    if kind == "trades":
        ids = cols["trade_id"]
        trade_id = pl.Series("trade_id", ids if ids is not None else [None] * n, dtype=pl.Int64)
        frame = pl.DataFrame(
            {
                "ts_ms": pl.Series(cols["ts_ms"], dtype=pl.Int64),
                "symbol": pl.Series(cols["symbol"], dtype=pl.String),
                "price": pl.Series(cols["price"], dtype=pl.Float64),
                "size": pl.Series(cols["size"], dtype=pl.Float64),
                "trade_id": trade_id,
            }
        ).with_columns(trade_id=pl.when(pl.col("trade_id") >= 0).then(pl.col("trade_id")))
        schema = TRADE_SCHEMA
    else:
        frame = pl.DataFrame(
            {
                "ts_ms": pl.Series(cols["ts_ms"], dtype=pl.Int64),
                "symbol": pl.Series(cols["symbol"], dtype=pl.String),
                **{
                    c: pl.Series(cols[c], dtype=pl.Float64, nan_to_null=True)
                    for c in ("bid", "ask", "bid_size", "ask_size")
                },
            }
        )
        schema = QUOTE_SCHEMA
    return frame.with_columns(row=pl.lit(offset, pl.Int64)).select(list(schema))


def split_hourly(frame: pl.DataFrame) -> Iterator[tuple[str, int, pl.DataFrame]]:
    """``(day, hour, rows)`` per UTC hour of ``ts_ms``, rows in their order."""
    hour_start = pl.col("ts_ms") // HOUR_MS
    keyed = frame.with_columns(_hour=hour_start)
    for (h,), chunk in keyed.group_by(["_hour"], maintain_order=True):
        stamp = datetime.fromtimestamp(int(h) * 3600, tz=UTC)
        yield stamp.strftime("%Y-%m-%d"), stamp.hour, chunk.drop("_hour")


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    # Fixed writer settings: the same rows always give the same bytes (redeliveries rewrite alike).
    pq.write_table(frame.to_arrow(), buffer, compression="zstd", write_statistics=True)
    return buffer.getvalue()


@dataclass
class _Buffer:
    first: int | None = None  # offset of the first message in the buffer
    last: int | None = None  # offset of the last message in the buffer
    frames: dict[str, list[pl.DataFrame]] = field(default_factory=lambda: {k: [] for k in KINDS})
    rows: int = 0
    started: float = 0.0
    plan: int | None = None  # a committed plan: the first flush must end exactly here

    def add(self, offset: int, parsed: tuple[str, dict[str, Any]] | None) -> None:
        if self.first is None:
            self.first = offset
            self.started = time.monotonic()
        self.last = offset
        if parsed is not None:
            kind, cols = parsed
            frame = _frame(kind, offset, cols)
            self.frames[kind].append(frame)
            self.rows += frame.height

    def reset(self) -> None:
        self.first = self.last = None
        self.frames = {k: [] for k in KINDS}
        self.rows = 0


@dataclass
class SinkStats:
    objects: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    flushes: int = 0
    keys: list[str] = field(default_factory=list)


class RawSink:
    """Consumer-group member landing its partitions of the tick topic (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        flush_rows: int = 500_000,
        flush_interval_s: float = 30.0,
        s3_client: Any = None,
    ) -> None:
        self.settings = settings
        self.topic = topic_name(settings, TICKS)
        self.bucket = settings.s3.raw_bucket
        self.group_id = f"{settings.kafka.topic_prefix}{NAME}"
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.consumer: Consumer = make_consumer(settings, self.group_id)
        self.s3 = s3_client or _s3_client(settings)
        self.buffers: dict[int, _Buffer] = {}
        self.stats = SinkStats()
        self._stop = False
        self._failed = False

    # -- assignment ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in consumer.committed(partitions, timeout=30):
            plan = _PLAN_DECODER.decode(tp.metadata).flush_to if tp.metadata else None
            self.buffers[tp.partition] = _Buffer(plan=plan)
            log.info("assigned", extra={"worker": NAME, "partition": tp.partition, "offset": tp.offset, "plan": plan})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            buffer = self.buffers.get(tp.partition)
            # Mid-plan, the flush must end at the plan's offset: leave it to the next owner.
            if not self._failed and buffer is not None and buffer.first is not None and buffer.plan is None:
                self.flush(tp.partition)
            self.buffers.pop(tp.partition, None)

    # -- loop -----------------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self._stop = True

    def run(self, max_idle_s: float | None = None, install_signals: bool = True) -> SinkStats:
        """Run until SIGTERM/SIGINT, or until ``max_idle_s`` without input (batch use)."""
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_input = time.monotonic()
        try:
            while not self._stop:
                msgs = self.consumer.consume(5_000, timeout=0.2)
                if msgs:
                    last_input = time.monotonic()
                    self.step(msgs)
                idle = time.monotonic() - last_input
                self.flush_due(force=idle > 1.0)
                if max_idle_s is not None and idle > max_idle_s:
                    break
            self.flush_due(force=True)
        except BaseException:
            self._failed = True  # no flush on the way out: the next owner redoes the range
            raise
        finally:
            self.consumer.close()
        return self.stats

    def step(self, msgs: list[Message]) -> None:
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"worker": NAME, "error": str(err)})
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None, "a consumed message has both"
            buffer = self.buffers.setdefault(partition, _Buffer())
            if buffer.plan is not None and buffer.first is None and offset > buffer.plan:
                buffer.plan = None  # the planned range is no longer in the log (retention)
            if buffer.plan is not None and offset > buffer.plan and buffer.first is not None:
                self.flush(partition)  # the planned last message is gone (retention): cut here
            buffer.add(offset, _ticks_of(msg))
            if buffer.plan is not None and offset >= buffer.plan:
                self.flush(partition)
            elif buffer.plan is None and buffer.rows >= self.flush_rows:
                self.flush(partition)

    def flush_due(self, force: bool = False) -> None:
        now = time.monotonic()
        for partition, buffer in list(self.buffers.items()):
            if buffer.first is None or buffer.plan is not None:
                continue
            if force or now - buffer.started >= self.flush_interval_s:
                self.flush(partition)

    # -- the three steps of a flush ------------------------------------------------------------
    def flush(self, partition: int) -> list[str]:
        buffer = self.buffers[partition]
        if buffer.first is None or buffer.last is None:
            return []
        first, last = buffer.first, buffer.last
        if buffer.rows and buffer.plan is None:
            self._commit(partition, first, msgspec.json.encode(FlushPlan(last)).decode())
        keys = self._write(partition, buffer)
        self._commit_done(partition, last + 1)
        buffer.reset()
        buffer.plan = None
        self.stats.flushes += 1
        log.info(
            "flushed",
            extra={"worker": NAME, "partition": partition, "first": first, "last": last, "objects": len(keys)},
        )
        return keys

    def _write(self, partition: int, buffer: _Buffer) -> list[str]:
        keys = []
        for kind in KINDS:
            if not buffer.frames[kind]:
                continue
            frame = pl.concat(buffer.frames[kind])
            for day, hour, rows in split_hourly(frame):
                first_row, last_row = rows["row"].min(), rows["row"].max()
                assert isinstance(first_row, int) and isinstance(last_row, int), "row is an integer column"
                key = object_key(kind, day, hour, partition, first_row, last_row)
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=parquet_bytes(rows))
                keys.append(key)
                self.stats.rows[kind] += rows.height
        self.stats.objects += len(keys)
        self.stats.keys += keys
        return keys

    def _commit(self, partition: int, offset: int, metadata: str | None) -> None:
        tp = (
            TopicPartition(self.topic, partition, offset, metadata=metadata)
            if metadata
            else TopicPartition(self.topic, partition, offset)
        )
        # A broker that is away is waited for (bounded); the plan/done protocol makes a retried
        # or lost commit safe.
        retry_retriable("commit", lambda: self.consumer.commit(offsets=[tp], asynchronous=False), 120.0)

    def _commit_done(self, partition: int, next_offset: int) -> None:
        """Step 3: everything up to ``next_offset`` is in object storage."""
        self._commit(partition, next_offset, None)


def _s3_client(settings: Settings) -> Any:
    import boto3

    s3 = settings.s3
    kwargs: dict[str, Any] = {"region_name": s3.region}
    if s3.endpoint_url:
        kwargs["endpoint_url"] = s3.endpoint_url
    if s3.access_key_id:
        kwargs["aws_access_key_id"] = s3.access_key_id
        kwargs["aws_secret_access_key"] = (
            None if s3.secret_access_key is None else s3.secret_access_key.get_secret_value()
        )
    return boto3.client("s3", **kwargs)


def run_raw_sink(
    exit_when_idle: float | None = None,
    flush_rows: int = 500_000,
    flush_interval_s: float = 30.0,
) -> None:
    """``tickforge stream raw-sink``: run the sink with the environment's settings."""
    import json

    from tickforge.platform.logs import configure_logging
    from tickforge.platform.settings import load_settings

    settings = load_settings()
    configure_logging()
    stats = RawSink(settings, flush_rows=flush_rows, flush_interval_s=flush_interval_s).run(exit_when_idle)
    print(json.dumps({"objects": stats.objects, "rows": stats.rows, "flushes": stats.flushes}))
