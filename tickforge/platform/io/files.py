"""Trade and quote files (CSV, gzip CSV, Parquet) to canonical polars frames plus a dead letter.

Every data row ends up in exactly one place: the parsed frame (``TickFile.data``) or the dead
letter (``TickFile.dead_letters``), both carrying ``row``, the 0-based data-row number in file
order (blank lines are not data rows). A bad row never fails the read; a file whose header lacks
a required column does, because then no row can be read.

CSV is parsed line by line in vectorized blocks: each block is split into physical lines by
polars (with a separator byte that does not occur in the block, so a whole line is one field),
and the lines are split on ``,``. That keeps the original text of every row for the dead letter
and finds rows whose field count differs from the header, which a normal CSV reader either
rejects as a whole file or pads silently. Lines containing a double quote go through Python's
``csv`` module instead, so quoted fields are honoured; a quoted field may not span lines.

Column layouts accepted (the shared data sets in ``/work/shared/data`` read as they are):

* trades: ``ts_ms`` or ``ts_trade_ms`` (Binance trade time), ``symbol``, ``price``, ``size``,
  optional ``trade_id``.
* quotes: ``ts_ms`` or ``ts_event_ms``; ``bid``/``bid_price``, ``ask``/``ask_price``, optional
  ``bid_size``/``ask_size``. Binance spot bookTicker rows have an empty ``ts_event_ms`` (the
  exchange sends no time); they fall back to ``ts_recv_ns // 1_000_000``, which is the
  *capture machine's* clock, about 1.27 s behind Binance's, not exchange time.

Quotes keep empty price or size fields as nulls (the one-sided first NBBO row of the equity set):
a bar's spread rule, not the reader, decides that such a quote is unusable.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import polars as pl
import pyarrow.parquet as pq
from polars.expr.whenthen import ChainedThen, Then

from tickforge.platform.bars.validation import (
    BAD_PRICE,
    BAD_SIZE,
    BAD_TIMESTAMP,
    MISSING_SYMBOL,
    trade_reject_reasons,
)

MALFORMED_ROW: Final = "malformed_row"
BAD_TRADE_ID: Final = "bad_trade_id"

TRADE_SCHEMA: Final = pl.Schema(
    {
        "ts_ms": pl.Int64,
        "symbol": pl.String,
        "price": pl.Float64,
        "size": pl.Float64,
        "trade_id": pl.Int64,
        "row": pl.Int64,
    }
)
QUOTE_SCHEMA: Final = pl.Schema(
    {
        "ts_ms": pl.Int64,
        "symbol": pl.String,
        "bid": pl.Float64,
        "ask": pl.Float64,
        "bid_size": pl.Float64,
        "ask_size": pl.Float64,
        "row": pl.Int64,
    }
)
DEAD_LETTER_SCHEMA: Final = pl.Schema(
    {"row": pl.Int64, "reason": pl.String, "raw": pl.String, "detail": pl.String}
)

ProgressHook = Callable[[int], None]
"""Called after each block with the number of data rows read so far."""

# One block of text rows in, (parsed rows, dead letters) out.
_Parser = Callable[[pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]]

# ~400 k equity rows per block: large enough for polars to be efficient, small enough that
# progress moves on a multi-million-row file.
_BLOCK_BYTES: Final = 16 * 1024 * 1024
_PARQUET_BATCH_ROWS: Final = 500_000
# Separator bytes tried for the one-field-per-line read; the first one absent from a block wins.
_LINE_SEPARATORS: Final = (b"\x1f", b"\x1e", b"\x1d", b"\x1c", b"\x00")

# Timestamp columns in order of preference with the divisor to epoch ms. A row uses the first
# of them that is non-empty, so a layout can mix exchange time with a receive-time fallback.
_TRADE_TS_COLUMNS: Final = (("ts_ms", 1), ("ts_trade_ms", 1))
_QUOTE_TS_COLUMNS: Final = (("ts_ms", 1), ("ts_event_ms", 1), ("ts_recv_ns", 1_000_000))


@dataclass(frozen=True)
class TickFile:
    """One file's parsed rows (canonical columns) and its rejected rows."""

    kind: Literal["trades", "quotes"]
    source: str
    data: pl.DataFrame
    dead_letters: pl.DataFrame

    @property
    def rows_read(self) -> int:
        return self.data.height + self.dead_letters.height


def read_trades(path: str | Path, progress: ProgressHook | None = None) -> TickFile:
    """Read trades; ``data`` holds only valid rows (see :func:`trade_reject_reasons`).

    Dead-letter reasons: ``malformed_row``, ``bad_timestamp``, ``missing_symbol``, ``bad_price``,
    ``bad_size``, ``bad_trade_id``. Duplicates and lateness are not the reader's business: they
    depend on the processing order and are decided by the bar builder.
    """
    return _read(Path(path), "trades", progress)


def read_quotes(path: str | Path, progress: ProgressHook | None = None) -> TickFile:
    """Read top-of-book quotes; ``bid_size``/``ask_size`` are null where the venue has none.

    Dead-letter reasons: ``malformed_row``, ``bad_timestamp``, ``missing_symbol``, ``bad_price``
    (bid or ask present but not a number), ``bad_size`` (a size present but not a number).
    """
    return _read(Path(path), "quotes", progress)


# --------------------------------------------------------------------------- reading blocks


def _read(path: Path, kind: Literal["trades", "quotes"], progress: ProgressHook | None) -> TickFile:
    parquet = _is_parquet(path)
    header = _parquet_header(path) if parquet else _csv_header(path)
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: repeated column names in header {header}")
    try:
        parse = _trade_parser(header) if kind == "trades" else _quote_parser(header)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    blocks = _parquet_blocks(path, header) if parquet else _csv_blocks(path, header)
    data_parts: list[pl.DataFrame] = []
    dead_parts: list[pl.DataFrame] = []
    rows = 0
    for block in blocks:
        data, dead = parse(block)
        data_parts.append(data)
        dead_parts.append(dead)
        rows += block.height
        if progress is not None:
            progress(rows)
    schema = TRADE_SCHEMA if kind == "trades" else QUOTE_SCHEMA
    return TickFile(
        kind=kind,
        source=str(path),
        data=pl.concat(data_parts) if data_parts else pl.DataFrame(schema=schema),
        dead_letters=pl.concat(dead_parts)
        if dead_parts
        else pl.DataFrame(schema=DEAD_LETTER_SCHEMA),
    )


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def _open_text(path: Path) -> BinaryIO:
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")  # type: ignore[return-value]


def _csv_header(path: Path) -> list[str]:
    with _open_text(path) as stream:
        first = stream.readline().decode("utf-8-sig").rstrip("\r\n")
    header = [name.strip() for name in next(csv.reader([first]), [])]
    if not header:
        raise ValueError(f"{path}: empty file, no header row")
    return header


def _csv_blocks(path: Path, header: Sequence[str]) -> Iterator[pl.DataFrame]:
    """Blocks of ``row, raw, n_fields`` and one text column per header field."""
    next_row = 0
    tail = b""
    with _open_text(path) as stream:
        stream.readline()  # the header, read by _csv_header
        while True:
            chunk = stream.read(_BLOCK_BYTES)
            buf = tail + chunk
            if chunk:
                # Cut at the last newline; the partial line waits for the next chunk.
                cut = buf.rfind(b"\n") + 1
                buf, tail = buf[:cut], buf[cut:]
            if buf:
                block = _split_lines(_lines(buf), header, next_row)
                next_row += block.height
                yield block
            if not chunk:
                return


def _lines(buf: bytes) -> pl.Series:
    """Physical lines of ``buf`` without terminators; blank lines dropped."""
    separator = next((s for s in _LINE_SEPARATORS if s not in buf), None)
    if separator is None:  # binary garbage using every candidate: fall back to Python
        text = buf.decode("utf-8", errors="replace")
        lines = pl.Series("raw", text.split("\n"), dtype=pl.String)
    else:
        lines = pl.read_csv(
            io.BytesIO(buf),
            has_header=False,
            separator=separator.decode(),
            quote_char=None,
            schema={"raw": pl.String},
            encoding="utf8-lossy",  # an undecodable byte spoils one row, not the file
        ).to_series()
    lines = lines.str.strip_suffix("\r")
    return lines.filter(lines.is_not_null() & (lines.str.strip_chars() != ""))


def _split_lines(lines: pl.Series, header: Sequence[str], first_row: int) -> pl.DataFrame:
    n = len(header)
    frame = pl.DataFrame({"raw": lines}).with_row_index("row", offset=first_row)
    frame = frame.with_columns(pl.col("row").cast(pl.Int64))
    quoted = lines.str.contains('"', literal=True)
    plain = frame.filter(~quoted)
    fields = (
        plain["raw"]
        .str.split_exact(",", n - 1)
        .struct.rename_fields([_source(h) for h in header])
        .struct.unnest()
    )
    parts = [
        pl.concat(
            [
                plain,
                plain.select(
                    (pl.col("raw").str.count_matches(",", literal=True) + 1)
                    .cast(pl.Int32)
                    .alias("n_fields")
                ),
                fields,
            ],
            how="horizontal",
        )
    ]
    if quoted.any():
        parts.append(_split_quoted(frame.filter(quoted), header))
    return pl.concat(parts).sort("row") if len(parts) > 1 else parts[0]


def _split_quoted(frame: pl.DataFrame, header: Sequence[str]) -> pl.DataFrame:
    """Rows with quotes, split by the csv module (rare, so per-row Python is fine)."""
    split = [next(csv.reader([line]), []) for line in frame["raw"]]
    columns = {
        _source(name): pl.Series(
            [f[i] if len(f) == len(header) else None for f in split], dtype=pl.String
        )
        for i, name in enumerate(header)
    }
    return frame.with_columns(
        pl.Series("n_fields", [len(f) for f in split], dtype=pl.Int32), **columns
    )


def _parquet_header(path: Path) -> list[str]:
    return list(pq.ParquetFile(path).schema_arrow.names)


def _parquet_blocks(path: Path, header: Sequence[str]) -> Iterator[pl.DataFrame]:
    """Parquet as the same text blocks as CSV, so that both share one parser.

    Values are rendered as text (floats in shortest round-trip form, so no value changes) and
    ``raw`` is the row as a CSV line. A datetime column is taken as UTC and becomes epoch ms.
    """
    next_row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        frame = pl.DataFrame(batch)
        text = frame.select(
            (
                pl.col(name).dt.epoch("ms")
                if frame.schema[name] in (pl.Datetime, pl.Date)
                else pl.col(name)
            ).cast(pl.String)
            for name in header
        )
        block = text.select(
            pl.int_range(next_row, next_row + text.height, dtype=pl.Int64).alias("row"),
            pl.concat_str([pl.col(h).fill_null("") for h in header], separator=",").alias("raw"),
            pl.lit(len(header), dtype=pl.Int32).alias("n_fields"),
            *(pl.col(h).alias(_source(h)) for h in header),
        )
        next_row += block.height
        yield block


# --------------------------------------------------------------------------- parsing fields


def _source(name: str) -> str:
    """Column holding a header field's text inside a block, apart from the parsed columns."""
    return f"field:{name}"


def _field(name: str) -> pl.Expr:
    """A field's text, trimmed; empty becomes null so that absent and blank mean the same."""
    text = pl.col(_source(name)).str.strip_chars()
    return pl.when(text != "").then(text)


def _number(name: str) -> pl.Expr:
    # Accepts what Python's float() does, including "nan" and "inf": those parse, and value
    # validation rejects them with a reason that names the value rather than the syntax.
    return _field(name).cast(pl.Float64, strict=False)


def _unparseable(name: str, parsed: pl.Expr) -> pl.Expr:
    return _field(name).is_not_null() & parsed.is_null()


def _shown(names: Sequence[str]) -> pl.Expr:
    """Detail text naming the fields at fault, e.g. ``price='abc'``."""
    return pl.concat_str(
        [pl.format(f"{name}='{{}}'", pl.col(_source(name)).fill_null("")) for name in names],
        separator=", ",
    )


def _first_match(cases: Sequence[tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """The value of the first case whose condition holds, else null (a when/then chain)."""
    (condition, value), *rest = cases
    chain: Then | ChainedThen = pl.when(condition).then(value)
    for condition, value in rest:
        chain = chain.when(condition).then(value)
    return chain.otherwise(None)


def _timestamp(
    header: Sequence[str], candidates: Sequence[tuple[str, int]]
) -> tuple[pl.Expr, list[str]]:
    present = [(name, divisor) for name, divisor in candidates if name in header]
    if not present:
        wanted = " or ".join(name for name, _ in candidates)
        raise ValueError(f"no timestamp column: need {wanted}, header is {list(header)}")
    # The first non-empty candidate decides; if it does not parse, the row is bad rather than
    # silently timed by a different clock.
    ts = _first_match(
        [
            (_field(name).is_not_null(), _field(name).str.to_integer(strict=False) // divisor)
            for name, divisor in present
        ]
    )
    return ts.cast(pl.Int64), [name for name, _ in present]


def _optional(header: Sequence[str], *names: str) -> str | None:
    """The first of ``names`` (aliases of one field) present in the header."""
    return next((name for name in names if name in header), None)


def _required(header: Sequence[str], *names: str) -> str:
    found = _optional(header, *names)
    if found is None:
        raise ValueError(f"missing column {' or '.join(names)}; header is {list(header)}")
    return found


def _malformed(n: int) -> pl.Expr:
    return pl.col("n_fields") != n


def _split(
    parsed: pl.DataFrame, reason: pl.Series, detail: pl.Expr, columns: Sequence[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    parsed = parsed.with_columns(reason.alias("reason"))
    dead = parsed.filter(pl.col("reason").is_not_null()).select(
        "row", "reason", "raw", detail.alias("detail")
    )
    return parsed.filter(pl.col("reason").is_null()).select(columns), dead


def _trade_parser(header: Sequence[str]) -> _Parser:
    n = len(header)
    ts, ts_columns = _timestamp(header, _TRADE_TS_COLUMNS)
    symbol = _required(header, "symbol")
    price = _required(header, "price")
    size = _required(header, "size")
    trade_id = _optional(header, "trade_id")
    trade_id_value = (
        _field(trade_id).str.to_integer(strict=False) if trade_id else pl.lit(None, pl.Int64)
    )
    id_unparseable = _unparseable(trade_id, trade_id_value) if trade_id else pl.lit(False)
    detail_by_reason = {
        BAD_TIMESTAMP: _shown(ts_columns),
        MISSING_SYMBOL: _shown([symbol]),
        BAD_PRICE: _shown([price]),
        BAD_SIZE: _shown([size]),
    }
    if trade_id:
        detail_by_reason[BAD_TRADE_ID] = _shown([trade_id])

    def parse(block: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        parsed = block.with_columns(
            ts.alias("ts_ms"),
            _field(symbol).alias("symbol"),
            _number(price).alias("price"),
            _number(size).alias("size"),
            trade_id_value.alias("trade_id"),
            id_unparseable.alias("_id_bad"),
        )
        value_reason = trade_reject_reasons(parsed)
        reason = parsed.select(
            pl.when(_malformed(n))
            .then(pl.lit(MALFORMED_ROW))
            .otherwise(
                pl.coalesce(
                    pl.lit(value_reason), pl.when(pl.col("_id_bad")).then(pl.lit(BAD_TRADE_ID))
                )
            )
        ).to_series()
        return _split(parsed, reason, _detail(n, detail_by_reason), list(TRADE_SCHEMA))

    return parse


def _quote_parser(header: Sequence[str]) -> _Parser:
    n = len(header)
    ts, ts_columns = _timestamp(header, _QUOTE_TS_COLUMNS)
    symbol = _required(header, "symbol")
    bid = _required(header, "bid", "bid_price")
    ask = _required(header, "ask", "ask_price")
    bid_size = _optional(header, "bid_size")
    ask_size = _optional(header, "ask_size")
    sizes = [s for s in (bid_size, ask_size) if s]

    def number_or_null(name: str | None) -> pl.Expr:
        return _number(name) if name else pl.lit(None, pl.Float64)

    def unparseable(names: Sequence[str]) -> pl.Expr:
        return pl.any_horizontal([_unparseable(c, _number(c)) for c in names] or [pl.lit(False)])

    clean_symbol = _field(symbol)
    reason = (
        pl.when(_malformed(n))
        .then(pl.lit(MALFORMED_ROW))
        .when(pl.col("ts_ms").is_null())
        .then(pl.lit(BAD_TIMESTAMP))
        .when(clean_symbol.is_null())
        .then(pl.lit(MISSING_SYMBOL))
        .when(unparseable([bid, ask]))
        .then(pl.lit(BAD_PRICE))
        .when(unparseable(sizes))
        .then(pl.lit(BAD_SIZE))
    )
    detail_by_reason = {
        BAD_TIMESTAMP: _shown(ts_columns),
        MISSING_SYMBOL: _shown([symbol]),
        BAD_PRICE: _shown([bid, ask]),
    }
    if sizes:
        detail_by_reason[BAD_SIZE] = _shown(sizes)

    def parse(block: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        parsed = block.with_columns(
            ts.alias("ts_ms"),
            clean_symbol.alias("symbol"),
            number_or_null(bid).alias("bid"),
            number_or_null(ask).alias("ask"),
            number_or_null(bid_size).alias("bid_size"),
            number_or_null(ask_size).alias("ask_size"),
        )
        return _split(
            parsed,
            parsed.select(reason).to_series(),
            _detail(n, detail_by_reason),
            list(QUOTE_SCHEMA),
        )

    return parse


def _detail(n: int, by_reason: dict[str, pl.Expr]) -> pl.Expr:
    return _first_match(
        [
            (
                pl.col("reason") == MALFORMED_ROW,
                pl.format(f"expected {n} fields, got {{}}", "n_fields"),
            )
        ]
        + [(pl.col("reason") == reason, text) for reason, text in by_reason.items()]
    )
