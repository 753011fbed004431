"""Property: no file of real rows, however corrupted, crashes the reader or loses a good row.

Real trade rows (the equity demo day, or the Binance window with trade ids) are cut into files of
random length up to 50,000 rows, and random rows are corrupted in every way an operator meets: bad
prices, sizes, timestamps, symbols and trade ids, too few or too many fields, stray quotes, bytes
that are not UTF-8; on top, harmless changes (quoted or padded fields, CRLF line ends, blank
lines, a byte-order mark) and a last line cut short. The test knows what it did to each row, so
it knows the outcome the reader must give: every corrupted row is dead-lettered exactly once with
its reason, every other row is read with its original values, and the bars of the good rows built
by the streaming kernel equal the independent reference over those same rows.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickforge.platform.bars.compare import compare_bars
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.bars.reference import reference_bars
from tickforge.platform.io.files import read_trades

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
LAYOUTS = {
    "equity": "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz",
    "binance": "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz",
}
MAX_ROWS = 50_000
TIMEFRAMES = ["1s", "1m"]


@dataclass(frozen=True)
class Layout:
    header: list[str]
    lines: list[str]  # data lines without terminators
    ts: str  # the timestamp field the reader uses

    def at(self, name: str) -> int:
        return self.header.index(name)


@cache
def layout(name: str) -> Layout:
    with gzip.open(SAMPLES / LAYOUTS[name], "rt", newline="") as f:
        header = next(f).rstrip("\r\n").split(",")
        lines = [line.rstrip("\n") for _, line in zip(range(MAX_ROWS + 10_000), f, strict=False)]
    return Layout(header, lines, "ts_ms" if "ts_ms" in header else "ts_trade_ms")


# A corruption: (field it touches or None for the whole line, new text or a function of the
# old, the reason the row must get). Encoded later, so non-UTF-8 bytes can be spliced in.
BAD_FIELD_VALUES = {
    "price": [
        ("-{}", "bad_price"),
        ("0", "bad_price"),
        ("NaN", "bad_price"),
        ("inf", "bad_price"),
        ("-inf", "bad_price"),
        ("abc", "bad_price"),
        ("1.2.3", "bad_price"),
        ("", "bad_price"),
    ],
    "size": [
        ("-{}", "bad_size"),
        ("0", "bad_size"),
        ("1e400", "bad_size"),
        ("nan", "bad_size"),
        ("ten", "bad_size"),
        ("", "bad_size"),
    ],
    "symbol": [("", "missing_symbol"), ("   ", "missing_symbol")],
    "ts": [("{}x", "bad_timestamp"), ("2013-10-08", "bad_timestamp"), ("", "bad_timestamp"), ("1.5", "bad_timestamp")],
    "trade_id": [("x{}", "bad_trade_id"), ("1.5", "bad_trade_id")],
}
KINDS = [
    *BAD_FIELD_VALUES,
    "too_few",
    "too_many",
    "stray_quote",
    "unclosed_quote",
    "not_utf8",
    "quoted",
    "quoted_comma",
    "padded",
    "crlf",
]
HARMLESS = {"quoted", "quoted_comma", "padded", "crlf"}


@dataclass
class Row:
    text: bytes
    reason: str | None  # None: a good row, read with the original values
    source: int  # index of the real line it came from


def corrupt(lay: Layout, line: str, kind: str, pick: int) -> tuple[bytes, str | None]:
    fields = line.split(",")
    if kind in BAD_FIELD_VALUES:
        name = lay.ts if kind == "ts" else kind
        value, reason = BAD_FIELD_VALUES[kind][pick % len(BAD_FIELD_VALUES[kind])]
        fields[lay.at(name)] = value.format(fields[lay.at(name)])
        return ",".join(fields).encode(), reason
    column = pick % len(fields)
    if kind == "too_few":
        return ",".join(fields[: max(1, len(fields) - 1 - pick % 3)]).encode(), "malformed_row"
    if kind == "too_many":
        return ",".join(fields + ["x"] * (1 + pick % 2)).encode(), "malformed_row"
    if kind == "stray_quote":
        fields[column] = fields[column][:1] + '"' + fields[column][1:]
        return ",".join(fields).encode(), "malformed_row"
    if kind == "unclosed_quote":
        fields[column] = '"' + fields[column]
        return ",".join(fields).encode(), "malformed_row"
    if kind == "not_utf8":
        cut = len(",".join(fields[:column]))
        raw = ",".join(fields).encode()
        return raw[:cut] + (b"\xff", b"\xc3\x28", b"\xed\xa0\x80")[pick % 3] + raw[cut:], "malformed_row"
    if kind == "quoted":  # a field quoted whole: same values
        fields[column] = f'"{fields[column]}"'
        return ",".join(fields).encode(), None
    if kind == "quoted_comma":  # a comma inside a quoted field the reader does not use
        unused = [i for i, h in enumerate(lay.header) if h not in {lay.ts, "symbol", "price", "size", "trade_id"}]
        i = unused[pick % len(unused)]
        fields[i] = f'"{fields[i]},x"'
        return ",".join(fields).encode(), None
    if kind == "padded":  # whitespace around the numbers and the symbol: trimmed
        for name in (lay.ts, "symbol", "price", "size"):
            fields[lay.at(name)] = f" {fields[lay.at(name)]}\t"
        return ",".join(fields).encode(), None
    assert kind == "crlf"
    return line.encode() + b"\r", None


@st.composite
def corrupted_files(draw: st.DrawFn) -> tuple[str, bytes, list[Row]]:
    name = draw(st.sampled_from(sorted(LAYOUTS)))
    lay = layout(name)
    n = draw(st.one_of(st.integers(1, 2_000), st.integers(MAX_ROWS // 2, MAX_ROWS)))
    offset = draw(st.integers(0, len(lay.lines) - n))
    # Positions and kinds from a seeded generator: dozens of faults per file, every kind in play.
    rnd = draw(st.randoms(use_true_random=False))
    count = min(n, draw(st.integers(0, 80)))
    faults = {i: (rnd.choice(KINDS), rnd.randrange(100)) for i in rnd.sample(range(n), count)}
    rows = []
    for i in range(n):
        kind, pick = faults.get(i, (None, 0))
        if kind == "trade_id" and "trade_id" not in lay.header:
            kind = "too_many"
        line = lay.lines[offset + i]
        text, reason = corrupt(lay, line, kind, pick) if kind else (line.encode(), None)
        rows.append(Row(text, reason, offset + i))
    truncate = draw(st.booleans())
    if truncate and rows[-1].reason is None and not rows[-1].text.endswith(b"\r"):
        cut = draw(st.integers(1, len(rows[-1].text) - 1))
        text = rows[-1].text[:cut]
        fields = text.decode().split(",")
        whole = lay.lines[rows[-1].source].split(",")
        # Cut inside the last field, which the reader does not use, the row is still good.
        same = len(fields) == len(whole) and all(
            fields[lay.at(c)] == whole[lay.at(c)] for c in (lay.ts, "symbol", "price", "size")
        )
        rows[-1] = Row(text, None if same else "malformed_row", rows[-1].source)
    body = []
    blanks = set(rnd.sample(range(n), min(n, draw(st.integers(0, 5)))))
    for i, row in enumerate(rows):
        if i in blanks:
            body.append(draw(st.sampled_from([b"", b"  ", b"\r", b"\t"])))
        body.append(row.text)
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    end = b"" if truncate else b"\n"
    return name, bom + ",".join(lay.header).encode() + b"\n" + b"\n".join(body) + end, rows


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(corrupted_files())
def test_corrupted_real_rows_never_crash_and_every_bad_row_is_one_dead_letter(tmp_path_factory, case) -> None:
    name, content, rows = case
    lay = layout(name)
    path = tmp_path_factory.mktemp("corrupt") / "trades.csv.gz"
    path.write_bytes(gzip.compress(content, compresslevel=1))

    result = read_trades(path)

    bad = [(i, row.reason) for i, row in enumerate(rows) if row.reason]
    dead = result.dead_letters
    assert dead.select("row", "reason").rows() == bad  # each bad row once, in file order
    assert dead["raw"].to_list() == [rows[i].text.decode("utf-8", errors="replace").removesuffix("\r") for i, _ in bad]
    good = [i for i, row in enumerate(rows) if row.reason is None]
    assert result.data["row"].to_list() == good
    original = independent_frame(lay, [rows[i].source for i in good], good)
    assert (
        result.data.select("ts_ms", "symbol", "price", "size").rows()
        == original.select("ts_ms", "symbol", "price", "size").rows()
    )

    built = build_bars(result, TIMEFRAMES)
    expected = reference_bars(original, TIMEFRAMES)
    for tf in TIMEFRAMES:
        diff = compare_bars(built.bars[tf], expected[tf])
        assert diff.ok, (tf, diff.summary())


def independent_frame(lay: Layout, sources: list[int], rows: list[int]) -> pl.DataFrame:
    """The good rows' original values, parsed without the reader under test."""
    columns = {name: [] for name in ("ts_ms", "symbol", "price", "size", "trade_id")}
    for i in sources:
        fields = lay.lines[i].split(",")
        columns["ts_ms"].append(int(fields[lay.at(lay.ts)]))
        columns["symbol"].append(fields[lay.at("symbol")])
        columns["price"].append(float(fields[lay.at("price")]))
        columns["size"].append(float(fields[lay.at("size")]))
        columns["trade_id"].append(int(fields[lay.at("trade_id")]) if "trade_id" in lay.header else None)
    return pl.DataFrame(
        {**columns, "row": rows},
        schema={
            "ts_ms": pl.Int64,
            "symbol": pl.String,
            "price": pl.Float64,
            "size": pl.Float64,
            "trade_id": pl.Int64,
            "row": pl.Int64,
        },
    )
