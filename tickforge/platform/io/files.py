"""Trade and quote files (CSV, gzip CSV, Parquet) to canonical polars frames plus a dead letter.

Every data row ends up in exactly one place: the parsed frame (``TickFile.data``) or the dead
letter (``TickFile.dead_letters``), both carrying ``row``, the 0-based data-row number in file
order (blank lines are not data rows). A bad row never fails the read; a file whose header lacks
a required column does, because then no row can be read.

CSV is read in chunks of whole lines (gzip inflated one chunk ahead in a thread). A trades chunk
that is ASCII without double quotes or CRs takes the fast path (:func:`_fast_trades`): polars
reads it typed in one pass; field counts are proven from the chunk's comma and line counts, and
every row that is not plainly good goes through the tolerant path below, so both paths give the
same rows, reasons and details. Any other chunk, and every quotes file, takes the tolerant path.

The tolerant path reads in two steps, both by polars' own CSV reader. First every physical line
is read as one text field (a separator byte the chunk does not contain, no quoting, lossy UTF-8), which keeps
each row's original text for the dead letter and gives its field count (commas; for a line with
double quotes, commas outside quoted fields). Then the lines of the right shape, and only those,
are read again as CSV with an all-text schema, so every line is exactly one record and nothing can
fail to parse; values are cast and validated per row in vectorized form after that. A row is
``malformed_row`` when its field count differs from the header's, when it holds bytes that are
not UTF-8, or when a double quote stands anywhere but around a whole field (a quoted field may
hold commas and doubled quotes but not a line break). Blank and whitespace-only lines are skipped;
CRLF line ends and a byte-order mark before the header are accepted.

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

import numpy as np
import polars as pl
from polars.expr.whenthen import ChainedThen, Then

from tickforge.platform.bars.validation import (
    BAD_PRICE,
    BAD_SIZE,
    BAD_TIMESTAMP,
    DEAD_LETTER_SCHEMA,
    MISSING_SYMBOL,
    trade_reject_reasons,
)
from tickforge.platform.contracts import MAX_SYMBOL_LENGTH
from tickforge.platform.io.csv_chunks import Chunk, ChunksAhead, is_parquet
from tickforge.platform.reasons import Reason

# Plain strings of the reasons the reader itself finds (polars literals take str, not StrEnum).
MALFORMED_ROW: Final = Reason.MALFORMED_ROW.value
BAD_TRADE_ID: Final = Reason.BAD_TRADE_ID.value

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
# Trade rows of one chunk of the fast path: symbols stay categorical until the whole file is read.
_FAST_TRADE_SCHEMA: Final = pl.Schema({**TRADE_SCHEMA, "symbol": pl.Categorical()})
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

ProgressHook = Callable[[int], None]
"""Called after each block with the number of data rows read so far."""
RowsHook = Callable[[pl.DataFrame], None]
"""Called with each block's parsed rows as soon as they are read, in file order (the symbol may
be categorical)."""

# One block of text rows in, (parsed rows, dead letters) out.
_Parser = Callable[[pl.DataFrame], tuple[pl.DataFrame, pl.DataFrame]]
# Decompressed CSV bytes of whole lines and the row number of its first line in, (parsed rows,
# dead letters, data rows) out; None where the bytes need the tolerant path.
_FastParser = Callable[[Chunk, int], "tuple[pl.DataFrame, pl.DataFrame, int] | None"]
# A parser with the header fields it reads (the only ones a CSV block needs to split out), and
# the layout's fast path for clean CSV, if it has one.
_Layout = tuple[_Parser, list[str], "_FastParser | None"]

_PARQUET_BATCH_ROWS: Final = 500_000
# Separator bytes tried for the one-field-per-line read; the first one absent from the file wins.
_LINE_SEPARATORS: Final = ("\x1f", "\x1e", "\x1d", "\x1c")
# A field in double quotes (a doubled quote inside stands for one), and a line of fields each
# either quoted whole or free of quotes: anything else is a malformed row, not a guess.
_QUOTED_FIELD: Final = r'"(?:[^"]|"")*"'
_QUOTED_LINE: Final = rf'^(?:{_QUOTED_FIELD}|[^",]*)(?:,(?:{_QUOTED_FIELD}|[^",]*))*$'
# What a lossy UTF-8 decode puts in place of bytes that are not UTF-8.
_REPLACEMENT_CHARACTER: Final = "\ufffd"
_NOT_UTF8: Final = "bytes that are not UTF-8"
# Lines holding either need a closer look than a comma count.
_SPECIAL: Final = '["\ufffd]'
_BAD_QUOTING: Final = "a double quote outside a quoted field, or an unclosed quoted field"

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
    # ``data["symbol"]`` as a categorical, where the reader made one (a dictionary encode the
    # bar builder then need not repeat); None for frames built some other way.
    symbols: pl.Series | None = None

    @property
    def rows_read(self) -> int:
        return self.data.height + self.dead_letters.height


@dataclass(frozen=True)
class StreamedFile:
    """What a streamed read leaves once its rows went to the caller: their count and the
    file's rejected rows."""

    kind: Literal["trades", "quotes"]
    source: str
    rows_read: int  # data rows, valid or not
    dead_letters: pl.DataFrame


def read_trades(path: str | Path, progress: ProgressHook | None = None) -> TickFile:
    """Read trades; ``data`` holds only valid rows (see :func:`trade_reject_reasons`).

    Dead-letter reasons: ``malformed_row``, ``bad_timestamp``, ``missing_symbol``, ``bad_price``,
    ``bad_size``, ``bad_trade_id``. Duplicates and lateness are not the reader's business: they
    depend on the processing order and are decided by the bar builder.
    """
    parts: list[pl.DataFrame] = []
    read = _read(Path(path), "trades", progress, parts.append)
    if not parts:
        return TickFile("trades", read.source, pl.DataFrame(schema=TRADE_SCHEMA), read.dead_letters)
    # Categorical symbols throughout, then one cast for the whole frame.
    data = pl.concat([part.cast({"symbol": pl.Categorical}) for part in parts])
    symbols = data["symbol"]
    return TickFile("trades", read.source, data.with_columns(symbols.cast(pl.String)), read.dead_letters, symbols)


def stream_trades(
    path: str | Path, on_rows: RowsHook, progress: ProgressHook | None = None, chunks: ChunksAhead | None = None
) -> StreamedFile:
    """Read trades as :func:`read_trades` does, handing each block's valid rows to ``on_rows``
    as soon as they are read (in file order; the symbol may be categorical) and keeping none:
    bars can be built while the file is read, and no frame of the whole file is assembled.
    ``chunks``: the file's CSV chunks, already being read ahead (closed when the read ends)."""
    try:
        return _read(Path(path), "trades", progress, on_rows, chunks)
    finally:
        if chunks is not None:
            chunks.close()


def read_quotes(path: str | Path, progress: ProgressHook | None = None) -> TickFile:
    """Read top-of-book quotes; ``bid_size``/``ask_size`` are null where the venue has none.

    Dead-letter reasons: ``malformed_row``, ``bad_timestamp``, ``missing_symbol``, ``bad_price``
    (bid or ask present but not a number), ``bad_size`` (a size present but not a number).
    """
    parts: list[pl.DataFrame] = []
    read = _read(Path(path), "quotes", progress, parts.append)
    data = pl.concat(parts) if parts else pl.DataFrame(schema=QUOTE_SCHEMA)
    return TickFile("quotes", read.source, data, read.dead_letters)


# --------------------------------------------------------------------------- reading blocks


def _read(
    path: Path,
    kind: Literal["trades", "quotes"],
    progress: ProgressHook | None,
    on_rows: RowsHook,
    chunks: ChunksAhead | None = None,
) -> StreamedFile:
    parquet = is_parquet(path)
    header = _parquet_header(path) if parquet else _csv_header(path)
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: repeated column names in header {header}")
    try:
        parse, fields, fast = _trade_parser(header) if kind == "trades" else _quote_parser(header)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    dead_parts: list[pl.DataFrame] = []
    rows = 0
    if parquet:
        for block in _parquet_blocks(path, header):
            data, dead = parse(block)
            dead_parts.append(dead)
            rows += block.height
            on_rows(data)
            if progress is not None:
                progress(rows)
    else:
        ahead = chunks if chunks is not None else ChunksAhead(path)
        try:
            for chunk in ahead:
                done = fast(chunk, rows) if fast is not None and chunk.plain else None
                if done is None:
                    block = _split_lines(_chunk_lines(chunk.data), header, fields, rows)
                    data, dead = parse(block)
                    done = data, dead, block.height
                data, dead, count = done
                dead_parts.append(dead)
                rows += count
                on_rows(data)
                if progress is not None:
                    progress(rows)
        finally:  # a failure above stops the chunk thread now, not when the traceback is freed
            ahead.close()
    dead_parts = [part for part in dead_parts if part.height]
    return StreamedFile(
        kind=kind,
        source=str(path),
        rows_read=rows,
        # Rows of the wrong shape come after the others within a block: restore file order.
        dead_letters=pl.concat(dead_parts).sort("row") if dead_parts else pl.DataFrame(schema=DEAD_LETTER_SCHEMA),
    )


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


def _chunk_lines(chunk: bytes) -> pl.DataFrame:
    """``raw``: the physical lines of ``chunk``, without terminators, blank lines dropped;
    ``commas``: the number of commas in each."""
    separator = next((s for s in _LINE_SEPARATORS if s.encode() not in chunk), None)
    if separator is None:  # binary garbage using every candidate byte: decode in Python
        lines = pl.Series("raw", _python_lines(chunk), dtype=pl.String)
    else:
        lines = pl.read_csv(
            # A leading line end: polars strips a byte-order mark at the start of its input,
            # which would change the first line; the empty line it adds is dropped below.
            b"\n" + chunk,
            has_header=False,
            separator=separator,
            quote_char=None,
            schema={"raw": pl.String},
            encoding="utf8-lossy",  # an undecodable byte spoils one row, not the file
        ).to_series()
    lines = lines.drop_nulls()  # polars reads an empty line (or a lone CR) as null
    if lines.str.ends_with("\r").any():  # a stray CR before CRLF or LF
        lines = lines.str.strip_suffix("\r")
    frame = pl.DataFrame({"raw": lines}).with_columns(
        pl.col("raw").str.count_matches(",", literal=True).cast(pl.Int32).alias("commas")
    )
    blank = _blank_lines(frame)
    if blank.is_empty():
        return frame
    keep = np.ones(frame.height, dtype=bool)
    keep[blank.to_numpy()] = False
    return frame.filter(pl.Series(keep))


def _blank_lines(lines: pl.DataFrame) -> pl.Series:
    """Positions of the blank or whitespace-only lines of ``raw, commas`` (not data rows)."""
    no_comma = lines.select(pl.arg_where(pl.col("commas") == 0)).to_series()
    if no_comma.is_empty():
        return no_comma
    return no_comma.filter(~lines["raw"].gather(no_comma).str.contains(r"\S"))


def _python_lines(chunk: bytes) -> list[str]:
    lines = chunk.decode("utf-8", errors="replace").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _split_lines(
    lines: pl.DataFrame, header: Sequence[str], fields: Sequence[str], first_row: int | pl.Series
) -> pl.DataFrame:
    """A block of ``raw, commas`` to ``row, raw, n_fields, malformed`` plus the text of ``fields``.

    Rows are numbered from ``first_row``, or given one by one. Field counts and quoting are
    checked here, on the whole line; polars' CSV reader then splits only lines of the right
    shape, so every line it sees is exactly one record and its output lines up with the block
    row for row. A shapeless line keeps null fields and its ``raw`` text.
    """
    n = len(header)
    raw = pl.col("raw")
    if isinstance(first_row, pl.Series):
        lines = lines.with_columns(first_row.cast(pl.Int64).alias("row"))
        rows = pl.col("row")
    else:
        rows = pl.int_range(first_row, first_row + lines.height, dtype=pl.Int64)
    frame = lines.select(
        rows.alias("row"),
        raw,
        (pl.col("commas") + 1).alias("n_fields"),
        pl.lit(None, pl.String).alias("malformed"),
    )
    if lines["raw"].str.contains(_SPECIAL).any():
        frame = _check_special_lines(frame)
    shaped = frame.select((pl.col("n_fields") == n) & pl.col("malformed").is_null()).to_series()
    if shaped.all():
        return frame.hstack(_split_fields(frame["raw"], header, fields))
    good = frame.filter(shaped)
    text = _split_fields(good["raw"], header, fields)
    misshapen = frame.filter(~shaped).with_columns(pl.lit(None, pl.String).alias(c) for c in text.columns)
    return pl.concat([good.hstack(text), misshapen])


def _check_special_lines(frame: pl.DataFrame) -> pl.DataFrame:
    """Field counts of lines with double quotes, and the reason a line cannot be a record."""
    raw = pl.col("raw")
    quoted = raw.str.contains('"', literal=True)
    well_quoted = raw.str.contains(_QUOTED_LINE)
    quoted_count = raw.str.replace_all(_QUOTED_FIELD, "").str.count_matches(",", literal=True) + 1
    return frame.with_columns(
        pl.when(~quoted).then(pl.col("n_fields")).when(well_quoted).then(quoted_count.cast(pl.Int32)).alias("n_fields"),
        pl.when(raw.str.contains(_REPLACEMENT_CHARACTER, literal=True))
        .then(pl.lit(_NOT_UTF8))
        .when(quoted & ~well_quoted)
        .then(pl.lit(_BAD_QUOTING))
        .alias("malformed"),
    )


def _split_fields(lines: pl.Series, header: Sequence[str], fields: Sequence[str]) -> pl.DataFrame:
    """``fields`` of lines that each hold exactly one record of ``header``, as text."""
    schema = {_source(name): pl.String for name in header}
    wanted = [list(header).index(name) for name in fields]
    if lines.is_empty():
        return pl.DataFrame(schema={_source(name): pl.String for name in fields})
    buffer = io.BytesIO()
    # A first record of empty fields, dropped after the read: polars strips a byte-order mark
    # at the start of its input, which would change the first line's first field.
    buffer.write(b"," * (len(header) - 1) + b"\n")
    pl.DataFrame({"raw": lines}).write_csv(buffer, include_header=False, quote_style="never")
    text = pl.read_csv(
        buffer.getvalue(),
        has_header=False,
        schema=schema,
        columns=wanted,
        quote_char='"',
    ).slice(1)
    if text.height != len(lines):  # not one record per line after all: split line by line
        return _split_fields_by_csv_module(lines, header, fields)
    return text


def _split_fields_by_csv_module(lines: pl.Series, header: Sequence[str], fields: Sequence[str]) -> pl.DataFrame:
    """What :func:`_split_fields` returns, from Python's csv module, one line at a time."""
    at = [list(header).index(name) for name in fields]
    records = [next(csv.reader([line]), []) for line in lines]
    return pl.DataFrame(
        {
            _source(name): pl.Series([r[i] if i < len(r) and r[i] != "" else None for r in records], dtype=pl.String)
            for name, i in zip(fields, at, strict=True)
        }
    )


def _parquet_header(path: Path) -> list[str]:
    import pyarrow.parquet as pq  # only for Parquet input: CSV reads start faster without it

    return list(pq.ParquetFile(path).schema_arrow.names)


def _parquet_blocks(path: Path, header: Sequence[str]) -> Iterator[pl.DataFrame]:
    """Parquet as the same text blocks as CSV, so that both share one parser.

    Values are rendered as text (floats in shortest round-trip form, so no value changes) and
    ``raw`` is the row as a CSV line. A datetime column is taken as UTC and becomes epoch ms.
    """
    import pyarrow.parquet as pq

    next_row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        frame = pl.DataFrame(batch)
        text = frame.select(
            (pl.col(name).dt.epoch("ms") if frame.schema[name] in (pl.Datetime, pl.Date) else pl.col(name)).cast(
                pl.String
            )
            for name in header
        )
        block = text.select(
            pl.int_range(next_row, next_row + text.height, dtype=pl.Int64).alias("row"),
            pl.concat_str([pl.col(h).fill_null("") for h in header], separator=",").alias("raw"),
            pl.lit(len(header), dtype=pl.Int32).alias("n_fields"),
            pl.lit(None, pl.String).alias("malformed"),
            *(pl.col(h).alias(_source(h)) for h in header),
        )
        next_row += block.height
        yield block


# --------------------------------------------------------------------------- the fast path


def _fast_trades(
    header: Sequence[str],
    fields: Sequence[str],
    parse: _Parser,
    ts: str,
    symbol: str,
    price: str,
    size: str,
    trade_id: str | None,
) -> _FastParser:
    """Clean CSV trades read typed by polars in one pass; the tolerant path only where needed.

    A chunk qualifies when it is ASCII without double quotes or CRs: then a line is a record
    exactly when it holds ``len(header) - 1`` commas, and polars, which splits it at every comma
    and line end, reads its fields as the tolerant path does. Every row that is not plainly good
    (a null where a value must be, an empty or missing last field, a trade id that does not
    parse, a value :func:`trade_reject_reasons` would reject, a symbol with surrounding spaces)
    is a *suspect*: its raw line goes through the tolerant parser, which gives it its reason,
    detail and values exactly as for any other file.

    Field counts are proven, not trusted to polars (which does not reliably refuse a line with
    too many fields): a plain row has its last field, so at least ``n - 1`` commas; the chunk's
    comma count minus the suspects' then leaves exactly ``n - 1`` for each plain row, or the
    chunk is read by the tolerant path whole. So is a chunk polars refuses, or whose row count
    is not its line count.
    """
    n = len(header)
    last = header[-1]
    schema: dict[str, pl.DataType | type[pl.DataType]] = {name: pl.String for name in header}
    # The trade id stays text: an empty id is allowed, so a null must be told apart from garbage.
    schema.update({ts: pl.Int64, price: pl.Float64, size: pl.Float64, symbol: pl.Categorical})
    read = sorted({header.index(c) for c in (ts, symbol, price, size, trade_id, last) if c})
    required = list(dict.fromkeys([ts, symbol, price, size, last]))

    def positive(name: str) -> pl.Expr:
        return pl.col(name).is_finite() & (pl.col(name) > 0)

    def fast(chunk: Chunk, first_row: int) -> tuple[pl.DataFrame, pl.DataFrame, int] | None:
        try:
            frame = pl.read_csv(
                chunk.data,
                has_header=False,
                schema=schema,
                columns=read,
                quote_char=None,
                ignore_errors=True,  # a value that does not parse is null: a suspect row
            )
        except pl.exceptions.PolarsError:
            return None  # e.g. a line with too many fields, or a short first line
        if frame.height != chunk.lines:
            return None
        trade_id_value = pl.col(trade_id).str.to_integer(strict=False) if trade_id else pl.lit(None, pl.Int64)
        plain = ~pl.any_horizontal([pl.col(c).is_null() for c in required]) & positive(price) & positive(size)
        if trade_id:
            plain &= pl.col(trade_id).is_null() | trade_id_value.is_not_null()
        odd = _odd_symbols(frame[symbol])
        if odd is not None:
            plain &= ~pl.col(symbol).is_in(odd.implode())
        # The rows as they will be kept if every one is plain (one pass), and which are not.
        frame = frame.select(
            pl.col(ts).alias("ts_ms"),
            pl.col(symbol).alias("symbol"),
            pl.col(price).alias("price"),
            pl.col(size).alias("size"),
            trade_id_value.alias("trade_id"),
            pl.int_range(first_row, first_row + frame.height, dtype=pl.Int64).alias("row"),
            plain.alias("plain"),
        )
        suspects = frame.select(pl.arg_where(~pl.col("plain"))).to_series().to_numpy()
        if not len(suspects) and chunk.commas == (n - 1) * frame.height:
            return frame.drop("plain"), pl.DataFrame(schema=DEAD_LETTER_SCHEMA), frame.height
        return _with_suspects(chunk, frame.drop("row"), suspects, first_row, header, fields, parse)

    return fast


def _odd_symbols(symbols: pl.Series) -> pl.Series | None:
    """The distinct symbols a row may not keep as read (surrounding whitespace, too long)."""
    names = symbols.unique().drop_nulls().cast(pl.String)
    odd = names.filter((names != names.str.strip_chars()) | (names.str.len_chars() > MAX_SYMBOL_LENGTH))
    return None if odd.is_empty() else odd.cast(symbols.dtype)


def _with_suspects(
    chunk: Chunk,
    frame: pl.DataFrame,
    suspects: np.ndarray,
    first_row: int,
    header: Sequence[str],
    fields: Sequence[str],
    parse: _Parser,
) -> tuple[pl.DataFrame, pl.DataFrame, int] | None:
    """A fast chunk whose ``suspects`` (line positions) go through the tolerant parser.

    Where the commas left to the other lines are not ``n - 1`` each (see :func:`_fast_trades`),
    every line's commas are counted and the lines with another count become suspects too.
    """
    text = chunk.data
    commas = len(header) - 1
    buffer = np.frombuffer(text, np.uint8)
    ends = np.flatnonzero(buffer == ord("\n"))
    ends = np.append(ends, len(text)) if len(ends) < frame.height else ends
    starts = np.concatenate(([0], ends[:-1] + 1))

    def suspect_lines(suspects: np.ndarray) -> pl.DataFrame:
        raw = [text[starts[i] : ends[i]].decode("ascii") for i in suspects]
        return pl.DataFrame({"raw": pl.Series(raw, dtype=pl.String)}).with_columns(
            pl.col("raw").str.count_matches(",", literal=True).cast(pl.Int32).alias("commas")
        )

    lines = suspect_lines(suspects)
    if chunk.commas - int(lines["commas"].sum()) != commas * (frame.height - len(suspects)):
        before_end = np.searchsorted(np.flatnonzero(buffer == ord(",")), ends)
        per_line = np.diff(before_end, prepend=0)
        suspects = np.union1d(suspects, np.flatnonzero(per_line != commas))
        plain = np.ones(frame.height, dtype=bool)
        plain[suspects] = False
        frame = frame.with_columns(pl.Series("plain", plain))
        lines = suspect_lines(suspects)
        if chunk.commas - int(lines["commas"].sum()) != commas * (frame.height - len(suspects)):
            return None
    blank = _blank_lines(lines).to_numpy()
    # Blank lines are not data rows: rows after one move up by one.
    blank_lines = suspects[blank]
    keep = np.ones(len(suspects), dtype=bool)
    keep[blank] = False

    def row_of(line: np.ndarray) -> np.ndarray:
        return first_row + line - np.searchsorted(blank_lines, line)

    # The kept lines are read back the way every tolerant chunk is, from bytes.
    kept = _chunk_lines("\n".join(lines.filter(pl.Series(keep))["raw"]).encode() + b"\n")
    block = _split_lines(kept, header, fields, pl.Series(row_of(suspects[keep])))
    data, dead = parse(block)
    good_lines = np.flatnonzero(frame["plain"].to_numpy())
    good = frame.filter("plain").select(TRADE_SCHEMA.names()[:-1])
    good = good.with_columns(pl.Series("row", row_of(good_lines), dtype=pl.Int64)).cast(_FAST_TRADE_SCHEMA)
    merged = good.merge_sorted(data.cast(_FAST_TRADE_SCHEMA), key="row") if data.height else good
    return merged, dead, frame.height - len(blank_lines)


# --------------------------------------------------------------------------- parsing fields


def _source(name: str) -> str:
    """Column holding a header field's text inside a block, apart from the parsed columns."""
    return f"field:{name}"


def _field(name: str, trim: bool = True) -> pl.Expr:
    """A field's text, trimmed; empty becomes null so that absent and blank mean the same.

    Untrimmed (``trim=False``) it is the text as read, for the first pass of
    :func:`_parse_values`.
    """
    if not trim:
        return pl.col(_source(name))
    text = pl.col(_source(name)).str.strip_chars()
    return pl.when(text != "").then(text)


def _number(name: str, trim: bool = True) -> pl.Expr:
    # Accepts "nan", "inf" and "infinity" (any case) as Python's float() does: those parse, and
    # value validation rejects them with a reason that names the value rather than the syntax.
    return _field(name, trim).cast(pl.Float64, strict=False)


def _symbol(name: str) -> pl.Expr:
    """Trimmed; blank stays ``""`` (cheaper than a null, and just as missing to validation)."""
    return pl.col(_source(name)).str.strip_chars()


def _integer(name: str, trim: bool = True) -> pl.Expr:
    return _field(name, trim).str.to_integer(strict=False)


# Value expressions of a parser, untrimmed (first pass) or trimmed (second pass).
_Values = Callable[[bool], dict[str, pl.Expr]]


def _parse_values(block: pl.DataFrame, values: _Values, numbers: Sequence[tuple[str, Sequence[str]]]) -> pl.DataFrame:
    """``block`` plus the columns of ``values``, parsed in two passes.

    Trimming every field of every row costs more than the rest of the parse, and almost no field
    needs it. So fields are parsed as read first; rows where a number did not parse although its
    text is there (padded with whitespace, or garbage) are parsed again, trimmed, and put back in
    place. ``numbers`` pairs each numeric value column with the fields it is read from.
    """
    parsed = block.with_columns(**values(False))
    suspect = pl.any_horizontal(
        [
            pl.col(value).is_null() & pl.any_horizontal([pl.col(_source(name)).is_not_null() for name in names])
            for value, names in numbers
        ]
    )
    rows = parsed.select(pl.arg_where(suspect)).to_series()
    if rows.is_empty():
        return parsed
    exact = block.select(pl.all().gather(rows)).select(**values(True))
    return parsed.with_columns(parsed[c].clone().scatter(rows, exact[c]) for c in exact.columns)


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
) -> tuple[Callable[[bool], pl.Expr], list[str]]:
    present = [(name, divisor) for name, divisor in candidates if name in header]
    if not present:
        wanted = " or ".join(name for name, _ in candidates)
        raise ValueError(f"no timestamp column: need {wanted}, header is {list(header)}")

    def ts(trim: bool) -> pl.Expr:
        if len(present) == 1 and present[0][1] == 1:
            return _integer(present[0][0], trim).cast(pl.Int64)
        # The first non-empty candidate decides; if it does not parse, the row is bad rather
        # than silently timed by a different clock.
        return _first_match(
            [(_field(name, trim).is_not_null(), _integer(name, trim) // divisor) for name, divisor in present]
        ).cast(pl.Int64)

    return ts, [name for name, _ in present]


def _optional(header: Sequence[str], *names: str) -> str | None:
    """The first of ``names`` (aliases of one field) present in the header."""
    return next((name for name in names if name in header), None)


def _required(header: Sequence[str], *names: str) -> str:
    found = _optional(header, *names)
    if found is None:
        raise ValueError(f"missing column {' or '.join(names)}; header is {list(header)}")
    return found


def _malformed(n: int) -> pl.Expr:
    """The row is not a record of the header: wrong field count, bad quoting, broken text."""
    return (pl.col("n_fields") != n).fill_null(True) | pl.col("malformed").is_not_null()


def _split(
    parsed: pl.DataFrame, reason: pl.Series, detail: pl.Expr, columns: Sequence[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    if reason.null_count() == len(reason):  # the usual block: every row is good
        return parsed.select(columns), pl.DataFrame(schema=DEAD_LETTER_SCHEMA)
    parsed = parsed.with_columns(reason.alias("reason"))
    # rechunk: polars 2.1 panics formatting text of a filtered many-chunk column (binview
    # "i < self.len()"); the dead rows are few, so the copy is cheap.
    dead = (
        parsed.filter(pl.col("reason").is_not_null()).rechunk().select("row", "reason", "raw", detail.alias("detail"))
    )
    return parsed.lazy().filter(pl.col("reason").is_null()).select(columns).collect(), dead


def _trade_parser(header: Sequence[str]) -> _Layout:
    n = len(header)
    ts, ts_columns = _timestamp(header, _TRADE_TS_COLUMNS)
    symbol = _required(header, "symbol")
    price = _required(header, "price")
    size = _required(header, "size")
    trade_id = _optional(header, "trade_id")
    detail_by_reason = {
        BAD_TIMESTAMP: _shown(ts_columns),
        MISSING_SYMBOL: _shown([symbol]),
        BAD_PRICE: _shown([price]),
        BAD_SIZE: _shown([size]),
    }
    if trade_id:
        detail_by_reason[BAD_TRADE_ID] = _shown([trade_id])

    def values(trim: bool) -> dict[str, pl.Expr]:
        trade_id_value = _integer(trade_id, trim) if trade_id else pl.lit(None, pl.Int64)
        return {
            "ts_ms": ts(trim),
            "symbol": _symbol(symbol),
            "price": _number(price, trim),
            "size": _number(size, trim),
            "trade_id": trade_id_value,
            # Untrimmed, a present id that does not parse makes the row a second-pass row.
            "_id_bad": _unparseable(trade_id, trade_id_value) if trade_id and trim else pl.lit(False),
        }

    numbers = [("ts_ms", ts_columns), ("price", [price]), ("size", [size])]
    if trade_id:
        numbers.append(("trade_id", [trade_id]))

    def parse(block: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        parsed = _parse_values(block, values, numbers)
        value_reason = trade_reject_reasons(parsed)
        reason = parsed.select(
            pl.when(_malformed(n))
            .then(pl.lit(MALFORMED_ROW))
            .otherwise(pl.coalesce(pl.lit(value_reason), pl.when(pl.col("_id_bad")).then(pl.lit(BAD_TRADE_ID))))
        ).to_series()
        return _split(parsed, reason, _detail(n, detail_by_reason), list(TRADE_SCHEMA))

    fields = _fields_read(header, ts_columns, symbol, price, size, trade_id)
    fast = None
    if len(ts_columns) == 1:  # with two clocks the first non-empty one decides: text rules
        fast = _fast_trades(header, fields, parse, ts_columns[0], symbol, price, size, trade_id)
    return parse, fields, fast


def _quote_parser(header: Sequence[str]) -> _Layout:
    n = len(header)
    ts, ts_columns = _timestamp(header, _QUOTE_TS_COLUMNS)
    symbol = _required(header, "symbol")
    bid = _required(header, "bid", "bid_price")
    ask = _required(header, "ask", "ask_price")
    bid_size = _optional(header, "bid_size")
    ask_size = _optional(header, "ask_size")
    sizes = [s for s in (bid_size, ask_size) if s]

    def number_or_null(name: str | None, trim: bool) -> pl.Expr:
        return _number(name, trim) if name else pl.lit(None, pl.Float64)

    def unparseable(names: Sequence[str], trim: bool) -> pl.Expr:
        # Untrimmed, a present number that does not parse makes the row a second-pass row.
        if not trim or not names:
            return pl.lit(False)
        return pl.any_horizontal([_unparseable(c, _number(c)) for c in names])

    def values(trim: bool) -> dict[str, pl.Expr]:
        return {
            "ts_ms": ts(trim),
            "symbol": _symbol(symbol),
            "bid": number_or_null(bid, trim),
            "ask": number_or_null(ask, trim),
            "bid_size": number_or_null(bid_size, trim),
            "ask_size": number_or_null(ask_size, trim),
            "_price_bad": unparseable([bid, ask], trim),
            "_size_bad": unparseable(sizes, trim),
        }

    numbers = [("ts_ms", ts_columns), ("bid", [bid]), ("ask", [ask])]
    numbers += [(value, [name]) for value, name in (("bid_size", bid_size), ("ask_size", ask_size)) if name]
    reason = (
        pl.when(_malformed(n))
        .then(pl.lit(MALFORMED_ROW))
        .when(pl.col("ts_ms").is_null())
        .then(pl.lit(BAD_TIMESTAMP))
        .when(pl.col("symbol").is_null() | (pl.col("symbol") == ""))
        .then(pl.lit(MISSING_SYMBOL))
        .when(pl.col("_price_bad"))
        .then(pl.lit(BAD_PRICE))
        .when(pl.col("_size_bad"))
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
        parsed = _parse_values(block, values, numbers)
        return _split(
            parsed,
            parsed.select(reason).to_series(),
            _detail(n, detail_by_reason),
            list(QUOTE_SCHEMA),
        )

    return parse, _fields_read(header, ts_columns, symbol, bid, ask, *sizes), None


def _fields_read(header: Sequence[str], *names: str | Sequence[str] | None) -> list[str]:
    """Header fields a parser reads, in header order."""
    wanted = {name for group in names if group for name in ([group] if isinstance(group, str) else group)}
    return [name for name in header if name in wanted]


def _detail(n: int, by_reason: dict[str, pl.Expr]) -> pl.Expr:
    return _first_match(
        [
            (
                pl.col("reason") == MALFORMED_ROW,
                pl.coalesce("malformed", pl.format(f"expected {n} fields, got {{}}", "n_fields")),
            )
        ]
        + [(pl.col("reason") == reason, text) for reason, text in by_reason.items()]
    )
