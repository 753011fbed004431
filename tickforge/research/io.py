"""Research IO: bar files in, registry files, results and picks files out (the edges of the room)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from tickforge.research.bars import (
    DAILY,
    DEAD_LETTER_COLUMNS,
    PRICE_COLUMNS,
    SESSION_ZONE,
    BarSeries,
    BarsError,
    split_bars,
)
from tickforge.research.registry import Registry, RegistryError, parse_registry
from tickforge.research.scoring import PICK_COLUMNS

DAILY_CSV_COLUMNS = ("date", "symbol", "open", "high", "low", "close", "volume")
DEFAULT_REGISTRY = Path(__file__).with_name("strategies.yaml")


def read_bars(path: str | Path, raw: bool = False) -> tuple[list[BarSeries], pl.DataFrame]:
    """Series per symbol and the dead-lettered rows (symbol, window_start, reason) of a bar file.

    Parquet: the platform's bar files (``bars_<tf>.parquet``: symbol, timeframe or window_end,
    window_start, OHLC, volume[, notional]). CSV (optionally .gz): the daily layout
    ``date,symbol,open,high,low,close,volume,adj_factor``, prices multiplied by ``adj_factor``
    unless ``raw``; a daily bar's window_start is 00:00 America/New_York of its date.
    """
    path = Path(path)
    if not path.is_file():
        raise BarsError(f"no bar file at {path}")
    try:
        if path.suffix == ".parquet":
            return split_bars(pl.read_parquet(path))
        frame = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise BarsError(f"cannot read {path}: {exc}") from exc
    return split_daily_csv(frame, raw)


def split_daily_csv(frame: pl.DataFrame, raw: bool = False) -> tuple[list[BarSeries], pl.DataFrame]:
    missing = [c for c in DAILY_CSV_COLUMNS if c not in frame.columns]
    if not raw and "adj_factor" not in frame.columns:
        missing.append("adj_factor (or pass --raw)")
    if missing:
        raise BarsError(f"daily bars lack columns {missing} (have {frame.columns})")
    day = pl.col("date").str.strptime(pl.Date, "%Y-%m-%d", strict=False)
    numbers = [pl.col(c).cast(pl.Float64, strict=False) for c in (*PRICE_COLUMNS, "volume")]
    factor = pl.lit(1.0) if raw else pl.col("adj_factor").cast(pl.Float64, strict=False)
    parsed = frame.with_columns(day.alias("_day"), *numbers, factor.alias("_factor"))
    bad_day = parsed.filter(pl.col("_day").is_null())
    factor_ok = (pl.col("_factor") > 0).fill_null(False)
    bad_factor = parsed.filter(pl.col("_day").is_not_null() & ~factor_ok)
    dead = pl.concat(
        [
            bad_day.select(
                pl.col("symbol"),
                pl.lit(None, pl.Int64).alias("window_start"),
                pl.lit("unparseable date").alias("reason"),
            ),
            bad_factor.select(
                pl.col("symbol"), _window_start(), pl.lit("missing or non-positive adj_factor").alias("reason")
            ),
        ]
    ).cast({"symbol": pl.String, "window_start": pl.Int64, "reason": pl.String})
    good = parsed.filter(pl.col("_day").is_not_null() & factor_ok).with_columns(
        *(pl.col(c) * pl.col("_factor") for c in PRICE_COLUMNS), _window_start()
    )
    series, refused = split_bars(good.select("symbol", "window_start", *PRICE_COLUMNS, "volume"), DAILY)
    return series, pl.concat([dead.select(DEAD_LETTER_COLUMNS), refused.select(DEAD_LETTER_COLUMNS)])


def _window_start() -> pl.Expr:
    return (
        pl.col("_day").cast(pl.Datetime("ms")).dt.replace_time_zone(SESSION_ZONE).dt.epoch("ms").alias("window_start")
    )


def load_registry(path: str | Path | None = None) -> Registry:
    """The registry YAML at ``path`` (the packaged ``strategies.yaml`` by default), validated."""
    path = Path(path) if path is not None else DEFAULT_REGISTRY
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RegistryError(f"cannot read the registry {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    return parse_registry(document, str(path))


def write_parquet(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write then rename, so a crash never leaves a truncated file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    frame.write_parquet(partial)
    partial.replace(path)
    return path


def write_picks(picks: pl.DataFrame, path: str | Path) -> Path:
    """The picks file the strategy runners read: Parquet, or YAML when ``path`` ends in .yaml/.yml.

    Columns symbol, strategy, timeframe, params (a JSON object string), bucket, weight (plus day
    when the frame has it).
    """
    path = Path(path)
    columns = [c for c in ("day", *PICK_COLUMNS) if c in picks.columns]
    missing = [c for c in PICK_COLUMNS if c not in picks.columns]
    if missing:
        raise ValueError(f"picks lack columns {missing}")
    out = picks.select(columns)
    if path.suffix not in (".yaml", ".yml"):
        return write_parquet(out, path)
    rows = [{**row, "day": str(row["day"])} if "day" in row else row for row in out.iter_rows(named=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(yaml.safe_dump({"picks": rows}, sort_keys=False))
    partial.replace(path)
    return path


def read_picks(path: str | Path) -> pl.DataFrame:
    """A picks file written by :func:`write_picks`; params stay JSON object strings."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        rows: list[dict[str, Any]] = (yaml.safe_load(path.read_text()) or {}).get("picks", [])
        frame = pl.DataFrame(rows) if rows else pl.DataFrame(schema={c: pl.String for c in PICK_COLUMNS})
        frame = frame.with_columns(pl.col("weight").cast(pl.Float64), pl.col("params").cast(pl.String))
        if "day" in frame.columns:
            frame = frame.with_columns(pl.col("day").str.to_date())
    else:
        frame = pl.read_parquet(path)
    for text in frame["params"].to_list():
        if not isinstance(json.loads(text), dict):
            raise ValueError(f"{path}: params {text!r} is not a JSON object")
    return frame
