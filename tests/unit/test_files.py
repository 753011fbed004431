"""File readers: the shared real data sets, malformed rows, block boundaries and Parquet."""

from __future__ import annotations

import datetime as dt
import gzip
import math
import threading
from pathlib import Path

import polars as pl
import pytest

from tickforge.platform.bars.validation import trade_reject_reasons
from tickforge.platform.io import csv_chunks, files
from tickforge.platform.io.files import TickFile, read_quotes, read_trades

# The samples the repository ships (the ``samples`` fixture of tests/conftest.py locates them).
EQUITY_TRADES = "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
EQUITY_NBBO = "us_equity_nbbo_BAC_2013-10-07_2013-10-11.csv.gz"  # full file: its first row is the quirk
FX_QUOTES = "fx_quotes_oanda_EURUSD_NZDUSD_2014-05-01_2014-05-02.csv.gz"
BINANCE_TRADES = "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
BINANCE_BBO = "crypto_binance_bbo_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"

# Row counts as documented in data/samples/README.md (the demo day of the vendor's per-day table).
EQUITY_TRADES_PER_DAY = {
    "SPY": [451_545],
    "BAC": [125_872],
    "AIG": [43_342],
}
EQUITY_DAYS = [dt.date(2013, 10, 8)]
NBBO_PER_DAY = [238_428, 288_048, 322_440, 285_890, 240_768]
FX_PER_SYMBOL = {"EURUSD": 73_520, "NZDUSD": 71_464}
BINANCE_TRADES_PER_SYMBOL = {
    "BTCUSDT-SPOT": 19_904,
    "ETHUSDT-SPOT": 14_515,
    "BTCUSDT-PERP": 21_313,
    "ETHUSDT-PERP": 14_076,
    "BTCUSD_PERP": 5_235,
    "ETHUSD_PERP": 3_595,
}
BINANCE_BBO_PER_SYMBOL = {
    "BTCUSDT-SPOT": 73_174,
    "ETHUSDT-SPOT": 58_758,
    "BTCUSDT-PERP": 66_089,
    "ETHUSDT-PERP": 53_992,
    "BTCUSD_PERP": 48_355,
    "ETHUSD_PERP": 35_563,
}


def per_symbol(tick_file: TickFile) -> dict[str, int]:
    counts = tick_file.data.group_by("symbol").len()
    return dict(zip(counts["symbol"], counts["len"], strict=True))


def assert_clean(tick_file: TickFile, schema: pl.Schema) -> None:
    assert tick_file.dead_letters.is_empty()
    assert tick_file.data.schema == schema
    assert tick_file.data["row"].to_list() == list(range(tick_file.data.height))


def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(text.encode())
    return path


# ----------------------------------------------------------------------------- shared data sets


def test_equity_trades_rows_per_symbol_and_new_york_day(samples: Path) -> None:
    trades = read_trades(samples / EQUITY_TRADES)
    assert_clean(trades, files.TRADE_SCHEMA)
    assert trades.data.height == 620_759
    day = pl.from_epoch("ts_ms", "ms").dt.convert_time_zone("America/New_York").dt.date()
    counts = trades.data.group_by("symbol", day.alias("day")).len()
    got = {(s, d): n for s, d, n in counts.iter_rows()}
    expected = {
        (symbol, day): n
        for symbol, per_day in EQUITY_TRADES_PER_DAY.items()
        for day, n in zip(EQUITY_DAYS, per_day, strict=True)
    }
    assert got == expected
    # No trade id in this layout: the 100,309 identical prints must all survive as trades.
    assert trades.data["trade_id"].null_count() == trades.data.height
    assert trades.data["price"].min() == 13.67 and trades.data["price"].max() == 167.72


@pytest.mark.full_data
def test_equity_nbbo_keeps_the_one_sided_first_row(shared_data: Path) -> None:
    quotes = read_quotes(shared_data / EQUITY_NBBO)
    assert_clean(quotes, files.QUOTE_SCHEMA)
    day = pl.from_epoch("ts_ms", "ms").dt.convert_time_zone("America/New_York").dt.date()
    by_day = quotes.data.group_by(day.alias("day")).len().sort("day")
    assert by_day["len"].to_list() == NBBO_PER_DAY
    first = quotes.data.row(0, named=True)
    assert first["bid"] is None and first["bid_size"] is None
    assert (first["ask"], first["ask_size"]) == (14.02, 500.0)
    assert quotes.data.slice(1)["bid"].null_count() == 0


def test_fx_quotes_have_no_sizes(samples: Path) -> None:
    quotes = read_quotes(samples / FX_QUOTES)
    assert_clean(quotes, files.QUOTE_SCHEMA)
    assert per_symbol(quotes) == FX_PER_SYMBOL
    assert quotes.data["bid_size"].null_count() == quotes.data.height
    assert quotes.data["ask_size"].null_count() == quotes.data.height


def test_binance_trades_use_trade_time_and_trade_id(samples: Path) -> None:
    trades = read_trades(samples / BINANCE_TRADES)
    assert_clean(trades, files.TRADE_SCHEMA)
    assert per_symbol(trades) == BINANCE_TRADES_PER_SYMBOL
    source = pl.read_csv(samples / BINANCE_TRADES, columns=["ts_trade_ms", "trade_id"])
    assert trades.data["ts_ms"].to_list() == source["ts_trade_ms"].to_list()
    assert trades.data["trade_id"].to_list() == source["trade_id"].to_list()


def test_binance_bbo_spot_falls_back_to_capture_clock(samples: Path) -> None:
    quotes = read_quotes(samples / BINANCE_BBO)
    assert_clean(quotes, files.QUOTE_SCHEMA)
    assert per_symbol(quotes) == BINANCE_BBO_PER_SYMBOL
    source = pl.read_csv(
        samples / BINANCE_BBO,
        columns=["ts_recv_ns", "ts_event_ms", "symbol"],
        schema_overrides={"ts_event_ms": pl.Int64},  # spot rows come first and are empty
    )
    expected = source.select(pl.coalesce("ts_event_ms", pl.col("ts_recv_ns") // 1_000_000).alias("ts_ms"))
    assert quotes.data["ts_ms"].to_list() == expected["ts_ms"].to_list()
    spot = source["symbol"].str.ends_with("-SPOT")
    assert source.filter(spot)["ts_event_ms"].null_count() == spot.sum()
    assert source.filter(~spot)["ts_event_ms"].null_count() == 0


# ----------------------------------------------------------------------------- malformed rows

DIRTY_LINES = [
    ("1000,AAA,10.5,100,1", None),
    ("1001,AAA,10.6,100", "malformed_row"),  # a field short
    ("1002,AAA,10.7,100,3,X", "malformed_row"),  # a field too many
    ("1003,AAA,abc,100,4", "bad_price"),
    ("2013-10-07,AAA,10.8,100,5", "bad_timestamp"),
    ("1005,,10.9,100,6", "missing_symbol"),
    ("1006,AAA,11.0,0,7", "bad_size"),
    ("1007,AAA,inf,100,8", "bad_price"),
    ("1008,AAA,NaN,100,9", "bad_price"),
    ("1009,AAA,-1.5,100,10", "bad_price"),
    ("1010,AAA,11.1,1e400,11", "bad_size"),  # overflows to inf
    ("1011,AAA,11.2,100,x12", "bad_trade_id"),
    ("1012,AAA,11.3,100,", None),  # no id is allowed
    ('1013,"BRK,A",11.4,100,14', None),  # quoted field with the separator inside
    ("1014,AAA,11.5,100,15", None),
]


def dirty_text() -> str:
    # A blank line and a CRLF line ending on top: neither is a row nor part of one.
    body = "\n".join(line for line, _ in DIRTY_LINES)
    return "ts_ms,symbol,price,size,trade_id\n" + body.replace("\n1003", "\n\n1003", 1).replace("\n1012", "\r\n1012", 1)


def check_dirty(result: TickFile) -> None:
    expected_dead = [(row, reason, line) for row, (line, reason) in enumerate(DIRTY_LINES) if reason]
    dead = result.dead_letters
    assert list(zip(dead["row"], dead["reason"], dead["raw"], strict=True)) == expected_dead
    assert dead["detail"].null_count() == 0
    kept = [row for row, (_, reason) in enumerate(DIRTY_LINES) if reason is None]
    assert result.data["row"].to_list() == kept
    assert result.data["symbol"].to_list() == ["AAA", "AAA", "BRK,A", "AAA"]
    assert result.data["trade_id"].to_list() == [1, None, 14, 15]
    assert result.rows_read == len(DIRTY_LINES)


def test_malformed_rows_go_to_the_dead_letter_with_their_reason(tmp_path: Path) -> None:
    result = read_trades(write_gz(tmp_path / "dirty.csv.gz", dirty_text()))
    check_dirty(result)
    details = dict(zip(result.dead_letters["row"], result.dead_letters["detail"], strict=True))
    assert details[1] == "expected 5 fields, got 4"
    assert details[3] == "price='abc'"
    assert details[4] == "ts_ms='2013-10-07'"


def test_block_boundaries_do_not_change_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of a few bytes cut almost every line in two: the carried tails must rejoin them.
    monkeypatch.setattr(csv_chunks, "BLOCK_BYTES", 7)
    seen: list[int] = []
    result = read_trades(write_gz(tmp_path / "dirty.csv.gz", dirty_text()), progress=seen.append)
    check_dirty(result)
    assert len(seen) > 1 and seen == sorted(seen) and seen[-1] == len(DIRTY_LINES)


def test_plain_csv_and_missing_required_column(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("ts_ms,symbol,price,size\n5,X,1.5,2\n")
    assert read_trades(plain).data.select("ts_ms", "price", "size").row(0) == (5, 1.5, 2.0)
    header_only = tmp_path / "header.csv"
    header_only.write_text("ts_ms,symbol,price,size\n")
    assert read_trades(header_only).rows_read == 0
    no_size = tmp_path / "no_size.csv"
    no_size.write_text("ts_ms,symbol,price\n5,X,1.5\n")
    with pytest.raises(ValueError, match="missing column size"):
        read_trades(no_size)


def test_quotes_keep_empty_sides_and_reject_garbage(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "ts_ms,symbol,bid_price,bid_size,ask_price,ask_size",
            "1,S,,,10.01,300",  # one-sided: kept, the bar rule decides
            "2,S,10.0,200,10.01,300",
            "3,S,10.0,200,ten,300",
            "4,S,10.0,lots,10.01,300",
            ",S,10.0,200,10.01,300",
            "6,,10.0,200,10.01,300",
            "7,S,10.0,200,10.01",
        ]
    )
    result = read_quotes(write_gz(tmp_path / "q.csv.gz", text))
    assert result.data.select("ts_ms", "bid", "ask", "bid_size", "ask_size").rows() == [
        (1, None, 10.01, None, 300.0),
        (2, 10.0, 10.01, 200.0, 300.0),
    ]
    dead = result.dead_letters
    assert list(zip(dead["row"], dead["reason"], strict=True)) == [
        (2, "bad_price"),
        (3, "bad_size"),
        (4, "bad_timestamp"),
        (5, "missing_symbol"),
        (6, "malformed_row"),
    ]


# ----------------------------------------------------------------------------- Parquet


def test_parquet_trades_and_quotes(tmp_path: Path) -> None:
    trades_path = tmp_path / "trades.parquet"
    pl.DataFrame(
        {
            "ts_ms": [1_000, 1_001, None, 1_003],
            "symbol": ["A", "A", "A", "B"],
            "price": [0.1 + 0.2, math.nan, 1.0, 2.5],
            "size": [1, 2, 3, 4],
            "trade_id": [7, 8, 9, None],
        }
    ).write_parquet(trades_path)
    trades = read_trades(trades_path)
    assert trades.data.rows() == [
        (1_000, "A", 0.1 + 0.2, 1.0, 7, 0),
        (1_003, "B", 2.5, 4.0, None, 3),
    ]
    dead = trades.dead_letters
    assert list(zip(dead["row"], dead["reason"], strict=True)) == [
        (1, "bad_price"),
        (2, "bad_timestamp"),
    ]

    quotes_path = tmp_path / "quotes.parquet"
    pl.DataFrame(
        {
            "ts_ms": [dt.datetime(2024, 1, 1, 0, 0, 0, 5_000)],  # naive datetime taken as UTC
            "symbol": ["EURUSD"],
            "bid": [1.1],
            "ask": [1.2],
        }
    ).write_parquet(quotes_path)
    quote = read_quotes(quotes_path).data.row(0, named=True)
    assert quote["ts_ms"] == 1_704_067_200_005
    assert quote["bid_size"] is None


# ----------------------------------------------------------------------------- value checks


def test_trade_reject_reasons_on_decoded_messages() -> None:
    decoded = pl.DataFrame(
        {
            "ts_ms": [1, None, 3, 4, 5, 6, 7],
            "symbol": ["A", "A", " ", None, "A", "A", "A"],
            "price": [1.0, 1.0, 1.0, 1.0, None, -math.inf, 2.0],
            "size": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -3.0],
        }
    )
    assert trade_reject_reasons(decoded).to_list() == [
        None,
        "bad_timestamp",
        "missing_symbol",
        "missing_symbol",
        "bad_price",
        "bad_price",
        "bad_size",
    ]


# ----------------------------------------------------------------------------- hostile bytes


def test_quotes_bom_crlf_non_utf8_and_a_truncated_last_line(tmp_path: Path) -> None:
    body = [
        b'1000,"AAA",10.5,100,1',  # quoted whole: fine
        b'1001,"A,""B""",10.5,100,2',  # separator and doubled quotes inside a quoted field
        b'1002,A"A,10.5,100,3',  # a quote inside an unquoted field
        b'1003,"AAA,10.5,100,4',  # an unclosed quote (must not swallow the next lines)
        b"1004,AAA,10.5,100,5\r",  # CRLF
        b"1005,A\xffA,10.5,100,6",  # not UTF-8
        b"   ",  # whitespace only: not a row
        b" 1006 ,  AAA , 10.5 ,100 ,7",  # padded fields are trimmed
        b"1007,AAA,10",  # the last line, cut short and without a line end
    ]
    path = tmp_path / "hostile.csv"
    path.write_bytes(b"\xef\xbb\xbfts_ms,symbol,price,size,trade_id\r\n" + b"\n".join(body))
    result = read_trades(path)
    assert result.data.select("row", "ts_ms", "symbol", "trade_id").rows() == [
        (0, 1000, "AAA", 1),
        (1, 1001, 'A,"B"', 2),
        (4, 1004, "AAA", 5),
        (6, 1006, "AAA", 7),
    ]
    dead = result.dead_letters
    assert dead.select("row", "reason").rows() == [
        (2, "malformed_row"),
        (3, "malformed_row"),
        (5, "malformed_row"),
        (7, "malformed_row"),
    ]
    assert dead["raw"].to_list()[:2] == ['1002,A"A,10.5,100,3', '1003,"AAA,10.5,100,4']
    assert "not UTF-8" in dead["detail"][2] and dead["detail"][3] == "expected 5 fields, got 3"
    assert "double quote" in dead["detail"][0]


def test_a_cut_gzip_stream_is_a_clear_error(tmp_path: Path, samples: Path) -> None:
    whole = (samples / EQUITY_TRADES).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cannot read the file"):
        read_trades(cut)


def test_a_file_using_every_separator_candidate_still_reads(tmp_path: Path) -> None:
    control = "".join(files._LINE_SEPARATORS)
    path = tmp_path / "control.csv"
    path.write_text(f"ts_ms,symbol,price,size\n1,A{control},2.5,3\n2,B,2.5,3\n")
    result = read_trades(path)
    assert result.data.select("symbol", "row").rows() == [(f"A{control}", 0), ("B", 1)]


def test_csv_module_fallback_splits_like_polars() -> None:
    header = ["ts_ms", "symbol", "price", "size", "trade_id"]
    lines = pl.Series([line for line, reason in DIRTY_LINES if reason != "malformed_row"])
    polars_split = files._split_fields(lines, header, ["ts_ms", "symbol", "trade_id"])
    module_split = files._split_fields_by_csv_module(lines, header, ["ts_ms", "symbol", "trade_id"])
    assert polars_split.rows() == module_split.rows()


# ----------------------------------------------------------------------------- the fast path


def tolerant_read(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What the tolerant path alone makes of a trades file (the fast path's oracle)."""
    header = files._csv_header(path)
    parse, fields, _ = files._trade_parser(header)
    body = b"".join(chunk.data for chunk in csv_chunks.csv_chunks(path))
    data, dead = parse(files._split_lines(files._chunk_lines(body), header, fields, 0))
    return data, dead.sort("row")


def fast_chunks(path: Path) -> list[object]:
    header = files._csv_header(path)
    fast = files._trade_parser(header)[2]
    assert fast is not None
    rows, done = 0, []
    for chunk in csv_chunks.csv_chunks(path):
        assert chunk.plain
        result = fast(chunk, rows)
        done.append(result)
        rows += result[2] if result else 0
    return done


# Edits of real lines a clean file can hold: each keeps the file ASCII without quotes or CRs, so
# the fast path reads it, and each must come out exactly as the tolerant path has it.
SHAPE_AND_VALUE_EDITS = [
    lambda f: f + ["extra"],  # a field too many (polars does not refuse it when it reads fields)
    lambda f: f[:-1],  # the last field missing
    lambda f: f[:-1] + [""],  # the last field empty
    lambda f: f[:3],  # several fields missing
    lambda f: f + ["", ""],  # two empty fields too many
    lambda f: [f" {f[0]} "] + f[1:],  # padded timestamp: trimmed
    lambda f: f[:1] + [f" {f[1]}\t"] + f[2:],  # padded symbol: trimmed
    lambda f: f[:2] + ["+" + f[2]] + f[3:],
    lambda f: f[:2] + [f[2] + "000000000000000000001"] + f[3:],
    lambda f: f[:2] + ["1e1"] + f[3:],
    lambda f: f[:2] + [".5"] + f[3:],
    lambda f: f[:2] + ["5."] + f[3:],
    lambda f: f[:2] + ["NaN"] + f[3:],
    lambda f: f[:2] + ["Infinity"] + f[3:],
    lambda f: f[:2] + ["1_0"] + f[3:],
    lambda f: f[:2] + ["0x10"] + f[3:],
    lambda f: f[:3] + ["1E2"] + f[4:],
    lambda f: f[:3] + ["-0"] + f[4:],
    lambda f: ["+" + f[0]] + f[1:],
    lambda f: ["9223372036854775808"] + f[1:],
    lambda f: [f[0] + ".0"] + f[1:],
    lambda f: f[:1] + ["X" * 60] + f[2:],  # longer than any symbol may be
    lambda f: f[:1] + [""] + f[2:],
    lambda f: [""] * len(f),
]


def edited_equity_file(path: Path, samples: Path, rows: int = 3_000) -> Path:
    with gzip.open(samples / EQUITY_TRADES, "rt") as f:
        header = next(f)
        lines = [next(f).rstrip("\n") for _ in range(rows)]
    step = rows // (len(SHAPE_AND_VALUE_EDITS) + 4)
    for k, edit in enumerate(SHAPE_AND_VALUE_EDITS):
        i = step * (k + 1)
        lines[i] = ",".join(edit(lines[i].split(",")))
    body = "\n".join(lines[: step * 2] + ["", "   ", "\t"] + lines[step * 2 :])
    return write_gz(path, header + body + "\n")


def test_the_fast_path_reads_clean_files_exactly_as_the_tolerant_path(tmp_path: Path, samples: Path) -> None:
    path = edited_equity_file(tmp_path / "edited.csv.gz", samples)
    assert all(fast_chunks(path)), "a clean file must not fall back to the tolerant path"
    data, dead = tolerant_read(path)
    result = read_trades(path)
    assert result.data.rows() == data.rows()
    assert result.dead_letters.rows() == dead.rows()
    reasons = dict(zip(result.dead_letters["row"], result.dead_letters["reason"], strict=True))
    assert list(reasons.values()).count("malformed_row") == 4  # an empty last field is fine
    assert result.rows_read == 3_000  # the three blank lines are not rows
    assert result.symbols is not None and result.symbols.cast(pl.String).equals(result.data["symbol"])


def test_the_fast_path_on_many_small_chunks_and_trade_ids(
    tmp_path: Path, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Binance rows: a trade id (empty is allowed, garbage is not) and spot rows whose last field
    # is empty, so a third of the rows are suspects the tolerant parser reads.
    with gzip.open(samples / BINANCE_TRADES, "rt") as f:
        header = next(f)
        lines = [next(f).rstrip("\n") for _ in range(5_000)]
    at = header.split(",").index("trade_id")
    for i, value in ((100, ""), (200, "x12"), (300, "1.5"), (400, " 7 ")):
        fields = lines[i].split(",")
        fields[at] = value
        lines[i] = ",".join(fields)
    path = write_gz(tmp_path / "binance.csv.gz", header + "\n".join(lines) + "\n")
    data, dead = tolerant_read(path)
    monkeypatch.setattr(csv_chunks, "BLOCK_BYTES", 4_096)
    assert all(fast_chunks(path))
    result = read_trades(path)
    assert result.data.rows() == data.rows()
    assert result.dead_letters.rows() == dead.rows()
    assert result.dead_letters.select("row", "reason").rows() == [(200, "bad_trade_id"), (300, "bad_trade_id")]
    assert result.data.filter(pl.col("row") == 400)["trade_id"].to_list() == [7]


def test_the_shared_trades_sample_takes_the_fast_path(samples: Path) -> None:
    assert all(fast_chunks(samples / EQUITY_TRADES))


def test_a_dirty_file_using_every_separator_candidate_is_split_in_python(tmp_path: Path) -> None:
    control = "".join(files._LINE_SEPARATORS)
    path = tmp_path / "control.csv"
    # The quotes keep it off the fast path; every separator byte keeps polars' line read off.
    path.write_text(f'ts_ms,symbol,price,size\n1,A{control},2.5,3\n2,"B",2.5,3\n3,C"C,2.5,3\n')
    result = read_trades(path)
    assert result.data.select("symbol", "row").rows() == [(f"A{control}", 0), ("B", 1)]
    assert result.dead_letters.select("row", "reason").rows() == [(2, "malformed_row")]


def test_a_reader_that_stops_early_leaves_no_thread_behind(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_chunks, "BLOCK_BYTES", 64 * 1024)
    chunks = csv_chunks.ChunksAhead(samples / EQUITY_TRADES)
    assert next(iter(chunks)).plain
    chunks.close()  # what the reader does on an exception in its loop
    assert not [t for t in threading.enumerate() if t.name == "csv-chunks"]


def test_a_multi_member_gzip_file_reads_as_one(tmp_path: Path, samples: Path) -> None:
    text = gzip.decompress((samples / BINANCE_TRADES).read_bytes())
    cut = len(text) // 2  # mid-line: the line goes on in the second member
    path = tmp_path / "members.csv.gz"
    path.write_bytes(gzip.compress(text[:cut]) + gzip.compress(text[cut:]))
    assert read_trades(path).data.equals(read_trades(samples / BINANCE_TRADES).data)


def test_a_streamed_read_hands_every_block_over_and_keeps_only_the_dead_letters(
    tmp_path: Path, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real rows with the dirty ones in the middle, in many small chunks read ahead by the thread
    # a command starts before its imports: the blocks handed over are the whole read, in order.
    with gzip.open(samples / EQUITY_TRADES, "rt") as f:
        header = next(f)
        good = [next(f) for _ in range(3_000)]
    dirty = [line + "\n" for line, _ in DIRTY_LINES]
    path = write_gz(tmp_path / "mixed.csv.gz", header + "".join(good[:1_500] + dirty + good[1_500:]))
    monkeypatch.setattr(csv_chunks, "BLOCK_BYTES", 16 * 1024)
    whole = read_trades(path)
    blocks: list[pl.DataFrame] = []
    streamed = files.stream_trades(path, blocks.append, chunks=csv_chunks.ChunksAhead(path))
    assert len(blocks) > 5
    assert pl.concat([b.with_columns(pl.col("symbol").cast(pl.String)) for b in blocks]).equals(whole.data)
    assert streamed.dead_letters.equals(whole.dead_letters) and streamed.dead_letters.height > 0
    assert streamed.rows_read == whole.rows_read == 3_000 + len(DIRTY_LINES)
    assert not [t for t in threading.enumerate() if t.name == "csv-chunks"]
