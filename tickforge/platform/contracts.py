"""Typed message contracts shared by workers, tools and the batch side.

Edge messages (one tick per message) are JSON. Internal tick topics carry :class:`TradeBatch` and
:class:`QuoteBatch`: one symbol's ticks as little-endian column buffers inside a msgpack envelope,
so a worker decodes a whole batch with ``numpy.frombuffer`` instead of one ``json.loads`` per tick.
All timestamps are UTC epoch milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

# Longer symbols are rejected (``bad_symbol``): no venue's symbol comes near it, and an unbounded
# one would be copied into every bar and message key of its symbol.
MAX_SYMBOL_LENGTH: Final = 48
TS_DTYPE: Final = np.dtype("<i8")
PRICE_DTYPE: Final = np.dtype("<f8")
ID_DTYPE: Final = np.dtype("<i8")


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One trade print as it arrives at the edge."""

    ts_ms: int
    symbol: str
    price: float
    size: float
    trade_id: int | None = None


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """Top of book. Sizes are absent for venues that do not publish them (FX)."""

    ts_ms: int
    symbol: str
    bid: float
    ask: float
    bid_size: float | None = None
    ask_size: float | None = None


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    """A bar (or a 10 ms bin) over ``[window_start, window_end)``.

    ``first_ts``/``last_ts`` are the event times of the open and close trades; they let a higher
    timeframe be rolled up from partial bars with the same open/close rule as from ticks.
    """

    symbol: str
    timeframe: str
    window_start: int
    window_end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    notional: float
    vwap: float
    trade_count: int
    first_ts: int
    last_ts: int
    spread_bps: float | None = None
    imbalance: float | None = None
    closed_at_ms: int | None = None  # wall clock when the bar was emitted (emit latency)

    def __post_init__(self) -> None:
        # An impossible bar is refused where it is built or decoded (decoding turns this into
        # a validation error, so a consumer dead-letters it): high is the top of the bar, low its
        # bottom, the VWAP between them (to rounding), something traded, the window non-empty.
        if not self.low <= min(self.open, self.close) or not max(self.open, self.close) <= self.high:
            raise ValueError(f"bar {self.symbol} {self.window_start}: open/close outside [low, high]")
        if not self.volume > 0 or self.trade_count < 1 or self.window_end <= self.window_start:
            raise ValueError(f"bar {self.symbol} {self.window_start}: empty bar or window")
        slack = 1e-9 * self.high
        if not self.low - slack <= self.vwap <= self.high + slack:
            raise ValueError(f"bar {self.symbol} {self.window_start}: vwap {self.vwap} outside [low, high]")


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """Indicators for one symbol at one 1 s bar; a field is None until it is ready."""

    symbol: str
    window_start: int
    window_end: int
    seq: int
    is_final: bool
    close: float
    session: str
    ema12: float | None = None
    ema26: float | None = None
    macd: float | None = None
    macd_signal: float | None = None
    macd_hist: float | None = None
    rsi14: float | None = None
    boll_mid: float | None = None
    boll_upper: float | None = None
    boll_lower: float | None = None
    vwap_session: float | None = None
    vwap_rolling: float | None = None
    realized_volatility: float | None = None
    spread_bps: float | None = None
    imbalance: float | None = None


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A rejected input with the reason; ``payload`` is the input as received (text)."""

    reason: str
    source: str
    payload: str
    symbol: str | None = None
    ts_ms: int | None = None
    partition: int | None = None
    offset: int | None = None
    detail: str | None = None

    def bounded(self) -> DeadLetter:
        """The letter with its text fields cut to bounded sizes: a dead letter must always fit in
        a message, however large the input it describes."""
        fields = {
            name: cut_text(value, limit)
            for name, limit in _DEAD_LETTER_LIMITS.items()
            if (value := getattr(self, name)) is not None and len(value) > limit
        }
        return msgspec.structs.replace(self, **fields) if fields else self


DEAD_LETTER_PAYLOAD_LIMIT: Final = 4_096
_DEAD_LETTER_LIMITS: Final = {"payload": DEAD_LETTER_PAYLOAD_LIMIT, "symbol": 64, "detail": 1_024, "source": 256}


def cut_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a note of how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


# The reason readers of the dead-letter topic count a message under when it is not a DeadLetter.
UNREADABLE_DEAD_LETTER: Final = "unreadable_dead_letter"


class TradeBatch(msgspec.Struct, frozen=True, kw_only=True, tag="trades"):
    """Trades in stream order, as column buffers (see module doc).

    One symbol (``symbol``), or several symbols of one partition in their interleaved stream
    order (``symbols`` plus a per-row index ``symbol_idx``): splitting a time slice into one
    message per symbol would reorder the partition's stream and change which ticks are late.
    """

    symbol: str
    ts_ms: bytes
    price: bytes
    size: bytes
    trade_id: bytes | None = None
    symbols: list[str] | None = None
    symbol_idx: bytes | None = None

    @classmethod
    def from_rows(
        cls,
        symbols: list[str],
        symbol_idx: np.ndarray,
        ts_ms: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        trade_id: np.ndarray | None = None,
    ) -> TradeBatch:
        """A multi-symbol batch; ``symbol_idx`` indexes ``symbols`` per row."""
        if len(symbols) == 1:
            return cls.from_arrays(symbols[0], ts_ms, price, size, trade_id)
        single = cls.from_arrays(symbols[0], ts_ms, price, size, trade_id)
        return msgspec.structs.replace(
            single, symbols=symbols, symbol_idx=np.ascontiguousarray(symbol_idx, "<i4").tobytes()
        )

    def row_symbols(self) -> tuple[list[str], np.ndarray | None]:
        """The batch's symbols and the per-row index into them (None: all rows are ``symbol``)."""
        if self.symbols is None or self.symbol_idx is None:
            return [self.symbol], None
        return self.symbols, np.frombuffer(self.symbol_idx, "<i4")

    @classmethod
    def from_arrays(
        cls,
        symbol: str,
        ts_ms: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        trade_id: np.ndarray | None = None,
    ) -> TradeBatch:
        return cls(
            symbol=symbol,
            ts_ms=np.ascontiguousarray(ts_ms, TS_DTYPE).tobytes(),
            price=np.ascontiguousarray(price, PRICE_DTYPE).tobytes(),
            size=np.ascontiguousarray(size, PRICE_DTYPE).tobytes(),
            trade_id=None if trade_id is None else np.ascontiguousarray(trade_id, ID_DTYPE).tobytes(),
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        ids = None if self.trade_id is None else np.frombuffer(self.trade_id, ID_DTYPE)
        return (
            np.frombuffer(self.ts_ms, TS_DTYPE),
            np.frombuffer(self.price, PRICE_DTYPE),
            np.frombuffer(self.size, PRICE_DTYPE),
            ids,
        )


class QuoteBatch(msgspec.Struct, frozen=True, kw_only=True, tag="quotes"):
    """One symbol's quotes in input order; sizes are NaN where the venue has none."""

    symbol: str
    ts_ms: bytes
    bid: bytes
    ask: bytes
    bid_size: bytes
    ask_size: bytes

    @classmethod
    def from_arrays(
        cls,
        symbol: str,
        ts_ms: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        bid_size: np.ndarray,
        ask_size: np.ndarray,
    ) -> QuoteBatch:
        def buf(a: np.ndarray, dtype: np.dtype) -> bytes:
            return np.ascontiguousarray(a, dtype).tobytes()

        return cls(
            symbol=symbol,
            ts_ms=buf(ts_ms, TS_DTYPE),
            bid=buf(bid, PRICE_DTYPE),
            ask=buf(ask, PRICE_DTYPE),
            bid_size=buf(bid_size, PRICE_DTYPE),
            ask_size=buf(ask_size, PRICE_DTYPE),
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (
            np.frombuffer(self.ts_ms, TS_DTYPE),
            np.frombuffer(self.bid, PRICE_DTYPE),
            np.frombuffer(self.ask, PRICE_DTYPE),
            np.frombuffer(self.bid_size, PRICE_DTYPE),
            np.frombuffer(self.ask_size, PRICE_DTYPE),
        )


TickBatch = TradeBatch | QuoteBatch

# Encoders and decoders are built once: msgspec's are fastest when reused.
JSON_ENCODER: Final = msgspec.json.Encoder()
BATCH_ENCODER: Final = msgspec.msgpack.Encoder()
BATCH_DECODER: Final = msgspec.msgpack.Decoder(TickBatch)
TRADE_DECODER: Final = msgspec.json.Decoder(Trade)
QUOTE_DECODER: Final = msgspec.json.Decoder(Quote)
BAR_DECODER: Final = msgspec.json.Decoder(Bar)
SIGNAL_DECODER: Final = msgspec.json.Decoder(Signal)
DEAD_LETTER_DECODER: Final = msgspec.json.Decoder(DeadLetter)

# Kafka header naming the encoding of a tick message: JSON edge messages may omit it.
CONTENT_TYPE_HEADER: Final = "content-type"
CONTENT_TYPE_BATCH: Final = "application/x-tickforge-batch"
CONTENT_TYPE_TRADE_JSON: Final = "application/x-tickforge-trade+json"
CONTENT_TYPE_QUOTE_JSON: Final = "application/x-tickforge-quote+json"

SCHEMA_TYPES: Final[dict[str, Any]] = {
    "trade": Trade,
    "quote": Quote,
    "bar": Bar,
    "signal": Signal,
    "dead_letter": DeadLetter,
    "trade_batch": TradeBatch,
    "quote_batch": QuoteBatch,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every contract, keyed by file stem (see ``schemas/``)."""
    return {name: msgspec.json.schema(tp) for name, tp in SCHEMA_TYPES.items()}


class BarBatch(msgspec.Struct, frozen=True, kw_only=True, tag="bars"):
    """One symbol's closed bars of one timeframe as column buffers (the 10 ms bin topic)."""

    symbol: str
    timeframe: str
    window_start: bytes
    open: bytes
    high: bytes
    low: bytes
    close: bytes
    volume: bytes
    notional: bytes
    trade_count: bytes
    first_ts: bytes
    last_ts: bytes


BAR_BATCH_DECODER: Final = msgspec.msgpack.Decoder(BarBatch)
SCHEMA_TYPES["bar_batch"] = BarBatch


SCHEMA_DIR: Final = Path(__file__).parent / "schemas"


def write_json_schemas(folder=SCHEMA_DIR) -> list:
    """Regenerate ``schemas/<name>.json`` (``python -m tickforge.platform.contracts``)."""
    import json

    folder.mkdir(exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_json_schemas():
        print(written)
