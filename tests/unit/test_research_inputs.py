"""Registry validation and bad bar input: one clear error or a dead-lettered row, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from tickforge.research.io import DEFAULT_REGISTRY, load_registry, read_bars
from tickforge.research.registry import RegistryError, parse_registry

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
DAILY_FILE = SAMPLES / "us_equity_daily_bars_10_symbols_1998-2021.csv.gz"


def packaged() -> dict:
    return yaml.safe_load(DEFAULT_REGISTRY.read_text())


def test_packaged_registry_loads_and_applies_constraints():
    registry = load_registry()
    grid = registry.grid("ema_cross", "1d")
    assert len(grid) == 174 and all(p["fast"] < p["slow"] for p in grid)
    assert registry.grid("orb_breakout", "1d") == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["strategies"].update(ema_crosss=d["strategies"].pop("ema_cross")),
            "strategies.ema_crosss: unknown strategy",
        ),
        (
            lambda d: d["strategies"]["ema_cross"]["grid"]["1d"].update(fsat="5:10:5"),
            "strategies.ema_cross.grid.1d: ema_cross: unknown parameter 'fsat'",
        ),
        (
            lambda d: d["strategies"]["ema_cross"].update(constraint=["fast < slow"]),
            "strategies.ema_cross.constraint: Extra inputs are not permitted",
        ),
        (lambda d: d["costs"].update(fee_bsp=1), "costs.fee_bsp: Extra inputs are not permitted"),
        (lambda d: d["costs"].update(fee_bps=-1), "costs.fee_bps: Input should be greater than or equal to 0"),
        (lambda d: d["strategies"]["ema_cross"].update(constraints=["fast < slwo"]), "names unknown parameter 'slwo'"),
        (
            lambda d: d["strategies"]["rsi_reversion"]["grid"]["1d"].update(period="7:3:1"),
            "needs step > 0 and stop >= start",
        ),
        (
            lambda d: d["strategies"]["donchian_breakout"]["grid"]["1d"].update(period="ten"),
            "donchian_breakout.period: expected a number",
        ),
        (lambda d: d["walk_forward"].update(train="3 years"), "walk_forward.train: Value error, span '3 years'"),
        (
            lambda d: d["strategies"]["ema_cross"]["grid"].update({"7x": {"fast": 5, "slow": 10}}),
            "unknown timeframe '7x'",
        ),
        (
            lambda d: d["strategies"]["ema_cross"]["grid"].update({"1d": {"fast": 50, "slow": 20}}),
            "the grid is empty after its constraints",
        ),
    ],
)
def test_a_registry_typo_is_one_error_naming_the_key(edit, message):
    document = packaged()
    edit(document)
    with pytest.raises(RegistryError) as info:
        parse_registry(document, "strategies.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("strategies.yaml: ")
    assert "\n" not in str(info.value)


def real_daily(n_per_symbol: int = 300) -> pl.DataFrame:
    return pl.read_csv(DAILY_FILE, infer_schema=False).filter(pl.int_range(pl.len()).over("symbol") < n_per_symbol)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tickforge.cli", "backtest", *args], capture_output=True, text=True, timeout=120
    )


def test_bad_rows_are_dead_lettered_with_their_reason(tmp_path):
    frame = real_daily()
    rows = frame.with_row_index("i")
    spy = rows.filter(pl.col("symbol") == "SPY")["i"].to_list()
    bad = rows.with_columns(
        close=pl.when(pl.col("i") == spy[10]).then(pl.lit("NaN")).otherwise(pl.col("close")),
        adj_factor=pl.when(pl.col("i") == spy[11]).then(pl.lit("")).otherwise(pl.col("adj_factor")),
        date=pl.when(pl.col("i") == spy[12]).then(pl.lit("2001-02-30")).otherwise(pl.col("date")),
        high=pl.when(pl.col("i") == spy[13]).then(pl.lit("1")).otherwise(pl.col("high")),
    ).drop("i")
    bad = pl.concat([bad, bad.filter(pl.col("symbol") == "AAPL").head(1)])  # a duplicated bar
    path = tmp_path / "bars.csv"
    bad.write_csv(path)
    series, dead = read_bars(path)
    reasons = sorted(dead["reason"].to_list())
    assert reasons == sorted(
        [
            "null, NaN or non-positive price",
            "missing or non-positive adj_factor",
            "unparseable date",
            "high/low do not bracket open and close",
            "duplicate (symbol, window_start)",
        ]
    )
    assert {s.symbol: len(s) for s in series}["SPY"] == 296
    done = cli(
        "run",
        "--bars",
        str(path),
        "--strategy",
        "ema_cross",
        "--param",
        "fast=5",
        "--param",
        "slow=20",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    assert pl.read_parquet(tmp_path / "out" / "dead_letter.parquet").height == 5


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (
            lambda f: f.drop("close"),
            ("--strategy", "ema_cross", "--param", "fast=5", "--param", "slow=20"),
            "daily bars lack columns ['close']",
        ),
        (
            lambda f: f.reverse(),
            ("--strategy", "ema_cross", "--param", "fast=5", "--param", "slow=20"),
            "are not sorted by window_start",
        ),
        (lambda f: f, ("--strategy", "ema_crossing"), "unknown strategy 'ema_crossing'"),
        (
            lambda f: f,
            ("--strategy", "ema_cross", "--param", "fast=5", "--param", "slwo=20"),
            "unknown parameter 'slwo'",
        ),
        (
            lambda f: f,
            ("--strategy", "ema_cross", "--param", "fast=five", "--param", "slow=20"),
            "ema_cross.fast: expected a number",
        ),
        (lambda f: f, ("--strategy", "orb_breakout", "--param", "opening_bars=3"), "orb_breakout needs intraday bars"),
        (
            lambda f: f,
            ("--strategy", "ema_cross", "--param", "fast=5", "--param", "slow=20", "--fee-bps", "-3"),
            "fee_bps must be in [0, 10000)",
        ),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, make, args, message):
    path = tmp_path / "bars.csv"
    make(real_daily(50)).write_csv(path)
    done = cli("run", "--bars", str(path), *args, "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_parquet_bars_missing_columns_and_sweep_errors(tmp_path):
    path = tmp_path / "bars_1m.parquet"
    pl.read_csv(SAMPLES / "us_equity_minute_bars_SPY_BAC_AIG_2013-10-08.csv.gz").rename({"ts_ms": "window_start"}).drop(
        "open"
    ).write_parquet(path)
    done = cli(
        "sweep",
        "--bars",
        str(path),
        "--strategy",
        "ema_cross",
        "--grid",
        "fast=5",
        "--grid",
        "slow=20",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 2 and "bars lack columns ['open']" in done.stderr and "Traceback" not in done.stderr
    done = cli(
        "sweep", "--bars", str(DAILY_FILE), "--strategy", "ema_cross", "--grid", "fast=5:50", "--out", str(tmp_path)
    )
    assert done.returncode == 2 and "use start:stop:step" in done.stderr
    done = cli(
        "sweep",
        "--bars",
        str(DAILY_FILE),
        "--strategy",
        "ema_cross",
        "--grid",
        "fast=5",
        "--train",
        "3y",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 2 and "needs both --train and --test" in done.stderr
