"""`tickforge bars build` and `bars validate` on real data, through the CLI."""

import gzip
import json

import polars as pl
from typer.testing import CliRunner

from tickforge.cli import app

runner = CliRunner()


def test_build_then_validate_against_the_reference_and_catch_a_corrupted_bar(samples, tmp_path):
    trades = samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
    quotes = samples / "crypto_binance_bbo_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
    out = tmp_path / "bars"
    built = runner.invoke(
        app,
        [
            "bars",
            "build",
            "--trades",
            str(trades),
            "--quotes",
            str(quotes),
            "--timeframes",
            "1s,1m,5m",
            "--out",
            str(out),
        ],
    )
    assert built.exit_code == 0, built.output
    summary = json.loads(built.output)
    assert summary["bars"]["1s"] > 2_000 and summary["dead_letters"] == []
    one_s = pl.read_parquet(out / "bars_1s.parquet")
    assert one_s.columns == [
        "symbol",
        "window_start",
        "window_end",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "notional",
        "vwap",
        "trade_count",
        "spread_bps",
        "imbalance",
    ]
    assert one_s["spread_bps"].null_count() < one_s.height
    args = [
        "bars",
        "validate",
        "--trades",
        str(trades),
        "--quotes",
        str(quotes),
        "--bars",
        str(out),
        "--timeframes",
        "1s,1m,5m",
    ]
    checked = runner.invoke(app, args)
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.output)["ok"] is True
    one_m = pl.read_parquet(out / "bars_1m.parquet")
    one_m.with_columns(
        high=pl.when(pl.int_range(pl.len()) == 3).then(pl.col("high") + 1).otherwise("high")
    ).write_parquet(out / "bars_1m.parquet")
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1
    report = json.loads(failed.output)
    assert report["timeframes"]["1m"]["differing_rows"] == 1 and report["timeframes"]["1s"]["ok"]


def test_malformed_rows_are_dead_letters_not_a_failed_run(samples, tmp_path):
    source = samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
    with gzip.open(source, "rt") as f:
        lines = [next(f) for _ in range(2_001)]
    lines[10] = "1381132800464,BAC,abc,100,N,1,0\n"  # unparseable price
    lines[20] = "1381132800464,BAC,13.9\n"  # field count differs from the header
    lines[30] = lines[30].replace(",BAC,", ",,") if ",BAC," in lines[30] else "1381132800464,,13.9,100,N,1,0\n"
    path = tmp_path / "trades.csv"
    path.write_text("".join(lines))
    result = runner.invoke(app, ["bars", "build", "--trades", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    dead = pl.read_parquet(tmp_path / "o" / "dead_letter.parquet")
    assert sorted(dead["reason"].to_list()) == ["bad_price", "malformed_row", "missing_symbol"]
    bars = pl.read_parquet(tmp_path / "o" / "bars_1s.parquet")
    assert bars["trade_count"].sum() == 2_000 - 3


# Twelve malformed rows of the kinds an operator meets, each with the reason it must get.
MALFORMED = [
    ("{ts},SPY,-167.42,210,Q,2000,0", "bad_price"),  # negative price
    ("{ts},SPY,0,210,Q,2000,0", "bad_price"),  # zero price
    ("{ts},SPY,NaN,210,Q,2000,0", "bad_price"),
    ("{ts},SPY,inf,210,Q,2000,0", "bad_price"),
    ("{ts},SPY,abc,210,Q,2000,0", "bad_price"),  # not a number
    ("{ts},SPY,167.42,-210,Q,2000,0", "bad_size"),  # negative size
    ("{ts},SPY,167.42,1e400,Q,2000,0", "bad_size"),  # overflows to inf
    ("{ts},,167.42,210,Q,2000,0", "missing_symbol"),
    ("13812x9217034,SPY,167.42,210,Q,2000,0", "bad_timestamp"),
    ("{ts},SPY,167.42", "malformed_row"),  # too few fields
    ("{ts},SPY,167.42,210,Q,2000,0,extra", "malformed_row"),  # too many fields
    ("{ts},SPY,,210,Q,2000,0", "bad_price"),  # empty price
]


def test_twenty_thousand_real_rows_with_twelve_malformed_ones(samples, tmp_path):
    """The file that crashed the hand-written splitter: 12 dead letters, bars exact."""
    from tickforge.platform.bars.compare import compare_bars
    from tickforge.platform.bars.reference import reference_bars

    with gzip.open(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz", "rt") as f:
        header = next(f)
        good = [next(f) for _ in range(20_000)]
    ts = good[0].split(",")[0]
    lines, expected_dead, step = [], [], len(good) // len(MALFORMED)
    for i, line in enumerate(good):
        lines.append(line)
        if i % step == step // 2 and len(expected_dead) < len(MALFORMED):
            text, reason = MALFORMED[len(expected_dead)]
            expected_dead.append((len(lines), reason, text.format(ts=ts)))
            lines.append(text.format(ts=ts) + "\n")
    path = tmp_path / "mixed.csv"
    path.write_text(header + "".join(lines))

    built = runner.invoke(
        app, ["bars", "build", "--trades", str(path), "--timeframes", "1s,1m,5m", "--out", str(tmp_path / "o")]
    )
    assert built.exit_code == 0, built.output
    dead = pl.read_parquet(tmp_path / "o" / "dead_letter.parquet")
    assert list(zip(dead["row"], dead["reason"], dead["raw"], strict=True)) == expected_dead
    source = pl.read_csv(header.encode() + "".join(good).encode(), schema_overrides={"conditions": pl.String})
    expected = reference_bars(source, ["1s", "1m", "5m"])
    for tf in ["1s", "1m", "5m"]:
        diff = compare_bars(pl.read_parquet(tmp_path / "o" / f"bars_{tf}.parquet"), expected[tf])
        assert diff.ok and diff.rows_expected > 0, (tf, diff.summary())
    assert expected["1s"]["trade_count"].sum() == 20_000
