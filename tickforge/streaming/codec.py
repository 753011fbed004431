"""Between Kafka messages and kernel columns: tick decoding with reasons, bar encoding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import msgspec
import numpy as np
from confluent_kafka import Message

from tickforge.platform.bars.builder import ClosedBars, SymbolTable
from tickforge.platform.bars.kernel import BarColumns
from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.platform.contracts import (
    BAR_DECODER,
    BATCH_DECODER,
    BATCH_ENCODER,
    DEAD_LETTER_PAYLOAD_LIMIT,
    ID_DTYPE,
    JSON_ENCODER,
    PRICE_DTYPE,
    TRADE_DECODER,
    TS_DTYPE,
    Bar,
    BarBatch,
    DeadLetter,
    Quote,
    QuoteBatch,
    Trade,
    TradeBatch,
)
from tickforge.platform.reasons import Reason

_TRADE_FIELDS = ("ts_ms", "symbol", "price", "size")


class Undecodable(Exception):
    """A message that is neither a batch nor a valid edge tick; ``reason`` names why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_tick_message(value: bytes | None) -> TradeBatch | QuoteBatch | Trade | Quote:
    """A column batch (msgpack) or one JSON edge tick; raises :class:`Undecodable`."""
    if not value:
        raise Undecodable(Reason.UNDECODABLE, "empty message")
    if value[:1] == b"{":
        try:
            return TRADE_DECODER.decode(value)  # the common edge message, strict and fast
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        try:
            obj = msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            raise Undecodable(Reason.UNDECODABLE, str(exc)) from exc
        if not isinstance(obj, dict):
            raise Undecodable(Reason.SCHEMA_VIOLATION, "a tick is a JSON object")
        try:
            if "bid" in obj or "ask" in obj:
                return msgspec.convert(obj, Quote)
            return msgspec.convert(obj, Trade)
        except msgspec.ValidationError as exc:
            missing = [f for f in _TRADE_FIELDS if f not in obj]
            if "ts_ms" in str(exc) or "ts_ms" in missing:
                raise Undecodable(Reason.BAD_TIMESTAMP, str(exc)) from exc
            raise Undecodable(Reason.SCHEMA_VIOLATION, str(exc)) from exc
    try:
        batch = BATCH_DECODER.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Undecodable(Reason.UNDECODABLE, str(exc)) from exc
    problem = batch_problem(batch)
    if problem is not None:
        raise Undecodable(Reason.MALFORMED_BATCH, problem)
    return batch


def batch_problem(batch: TradeBatch | QuoteBatch) -> str | None:
    """Why the column buffers of a decoded batch do not fit together (None: they do).

    msgpack checks only that each buffer is bytes; a buffer cut mid-element, columns of different
    lengths or a symbol index past the symbol list would fail later, inside the worker.
    """
    columns: dict[str, tuple[bytes, np.dtype]]
    if isinstance(batch, TradeBatch):
        columns = {
            "ts_ms": (batch.ts_ms, TS_DTYPE),
            "price": (batch.price, PRICE_DTYPE),
            "size": (batch.size, PRICE_DTYPE),
        }
        if batch.trade_id is not None:
            columns["trade_id"] = (batch.trade_id, ID_DTYPE)
        if (batch.symbols is None) != (batch.symbol_idx is None):
            return "symbols and symbol_idx come together"
        if batch.symbol_idx is not None:
            columns["symbol_idx"] = (batch.symbol_idx, np.dtype("<i4"))
    else:
        columns = {
            name: (getattr(batch, name), TS_DTYPE if name == "ts_ms" else PRICE_DTYPE)
            for name in ("ts_ms", "bid", "ask", "bid_size", "ask_size")
        }
    rows = set()
    for name, (buffer, dtype) in columns.items():
        if len(buffer) % dtype.itemsize:
            return f"{name}: {len(buffer)} bytes is not a whole number of {dtype.itemsize}-byte values"
        rows.add(len(buffer) // dtype.itemsize)
    if len(rows) > 1:
        return f"columns of different lengths: {sorted(rows)} rows"
    if isinstance(batch, TradeBatch) and batch.symbols is not None and batch.symbol_idx is not None:
        index = np.frombuffer(batch.symbol_idx, "<i4")
        if len(index) and (index.min() < 0 or index.max() >= len(batch.symbols)):
            return f"symbol_idx outside the {len(batch.symbols)} symbols of the batch"
    return None


def payload_text(value: bytes | None, limit: int = DEAD_LETTER_PAYLOAD_LIMIT) -> str:
    """The message as text for a dead letter (binary shown as hex, long ones cut)."""
    if value is None:
        return ""
    head = value[: limit * 4]  # enough bytes for ``limit`` characters
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A character split by the cut is still text; anything else is binary.
        split_char = len(head) < len(value) and exc.start >= len(head) - 3
        text = head[: exc.start].decode("utf-8") if split_char else head.hex()
    if len(text) > limit or len(head) < len(value):
        return f"{text[:limit]}... ({len(value):,} bytes)"
    return text


def dead_letter_for(
    msg: Message,
    reason: str,
    source: str,
    detail: str | None = None,
    symbol: str | None = None,
    ts_ms: int | None = None,
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        source=source,
        payload=payload_text(msg.value()),
        partition=msg.partition(),
        offset=msg.offset(),
        detail=detail,
        symbol=symbol,
        ts_ms=ts_ms,
    )


def bars_to_messages(closed: ClosedBars, symbols: SymbolTable, closed_at_ms: int) -> Iterator[tuple[str, Bar]]:
    """Closed bars as (symbol, Bar) in emit order."""
    bars = closed.bars
    length = timeframe_ms(closed.timeframe)
    names = symbols.names
    spread = closed.spread_bps
    imbalance = closed.imbalance
    cols = (
        bars.sym.tolist(),
        bars.start.tolist(),
        bars.open.tolist(),
        bars.high.tolist(),
        bars.low.tolist(),
        bars.close.tolist(),
        bars.volume.tolist(),
        bars.notional.tolist(),
        bars.count.tolist(),
        bars.first_ts.tolist(),
        bars.last_ts.tolist(),
    )
    spreads = spread.tolist() if spread is not None else None
    imbalances = imbalance.tolist() if imbalance is not None else None
    for i, (sym, start, o, h, lo, c, vol, notional, count, first, last) in enumerate(zip(*cols, strict=True)):
        name = names[sym]
        s = spreads[i] if spreads is not None else None
        m = imbalances[i] if imbalances is not None else None
        yield (
            name,
            Bar(
                symbol=name,
                timeframe=closed.timeframe,
                window_start=start,
                window_end=start + length,
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=vol,
                notional=notional,
                vwap=notional / vol,
                trade_count=count,
                first_ts=first,
                last_ts=last,
                spread_bps=None if s is None or s != s else s,
                imbalance=None if m is None or m != m else m,
                closed_at_ms=closed_at_ms,
            ),
        )


def encode_bar(bar: Bar) -> bytes:
    return JSON_ENCODER.encode(bar)


BAR_BATCH_ROWS = 8_192  # ~650 KB a message: under the broker's default 1 MB message limit


def bar_batches(closed: ClosedBars, symbols: SymbolTable) -> Iterator[tuple[str, bytes]]:
    """Closed bars as column messages per symbol (the compact 10 ms bin topic)."""
    bars = closed.bars
    for code in np.unique(bars.sym):
        rows = np.flatnonzero(bars.sym == code)
        name = symbols.names[int(code)]
        for first in range(0, len(rows), BAR_BATCH_ROWS):
            yield name, _bar_batch(bars.take(rows[first : first + BAR_BATCH_ROWS]), name, closed.timeframe)


def _bar_batch(part: BarColumns, name: str, timeframe: str) -> bytes:
    return BATCH_ENCODER.encode(
        BarBatch(
            symbol=name,
            timeframe=timeframe,
            window_start=part.start.tobytes(),
            open=part.open.tobytes(),
            high=part.high.tobytes(),
            low=part.low.tobytes(),
            close=part.close.tobytes(),
            volume=part.volume.tobytes(),
            notional=part.notional.tobytes(),
            trade_count=part.count.tobytes(),
            first_ts=part.first_ts.tobytes(),
            last_ts=part.last_ts.tobytes(),
        )
    )


def bars_from_messages(bars: list[Bar], symbols: SymbolTable) -> BarColumns:
    """Decoded Bar messages back to kernel columns (the timeframe worker's input)."""
    n = len(bars)
    return BarColumns(
        sym=symbols.codes([b.symbol for b in bars]),
        start=np.fromiter((b.window_start for b in bars), np.int64, n),
        open=np.fromiter((b.open for b in bars), np.float64, n),
        high=np.fromiter((b.high for b in bars), np.float64, n),
        low=np.fromiter((b.low for b in bars), np.float64, n),
        close=np.fromiter((b.close for b in bars), np.float64, n),
        volume=np.fromiter((b.volume for b in bars), np.float64, n),
        notional=np.fromiter((b.notional for b in bars), np.float64, n),
        count=np.fromiter((b.trade_count for b in bars), np.int64, n),
        first_ts=np.fromiter((b.first_ts for b in bars), np.int64, n),
        last_ts=np.fromiter((b.last_ts for b in bars), np.int64, n),
    )


def decode_bar(value: bytes) -> Bar:
    return BAR_DECODER.decode(value)


class DeadLetterSink(Protocol):
    def dead_letter(self, letter: DeadLetter) -> None: ...


def bar_or_dead_letter(msg: Message, out: DeadLetterSink, source: str) -> Bar | None:
    """A bar message decoded, or None after sending it to the dead letter as undecodable."""
    value = msg.value()
    if not value:  # a tombstone or an empty message: nothing to decode (msgspec raises TypeError on None)
        out.dead_letter(dead_letter_for(msg, Reason.UNDECODABLE, source, "empty message"))
        return None
    try:
        return BAR_DECODER.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        out.dead_letter(dead_letter_for(msg, Reason.UNDECODABLE, source, str(exc)))
        return None
