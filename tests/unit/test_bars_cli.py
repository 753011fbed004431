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
    built = runner.invoke(app, ["bars", "build", "--trades", str(trades), "--quotes", str(quotes),
                                "--timeframes", "1s,1m,5m", "--out", str(out)])
    assert built.exit_code == 0, built.output
    summary = json.loads(built.output)
    assert summary["bars"]["1s"] > 2_000 and summary["dead_letters"] == []
    one_s = pl.read_parquet(out / "bars_1s.parquet")
    assert one_s.columns == ["symbol", "window_start", "window_end", "open", "high", "low", "close", "volume",
                             "notional", "vwap", "trade_count", "spread_bps", "imbalance"]
    assert one_s["spread_bps"].null_count() < one_s.height
    args = ["bars", "validate", "--trades", str(trades), "--quotes", str(quotes), "--bars", str(out),
            "--timeframes", "1s,1m,5m"]
    checked = runner.invoke(app, args)
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.output)["ok"] is True
    one_m = pl.read_parquet(out / "bars_1m.parquet")
    one_m.with_columns(high=pl.when(pl.int_range(pl.len()) == 3).then(pl.col("high") + 1).otherwise("high")) \
        .write_parquet(out / "bars_1m.parquet")
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
