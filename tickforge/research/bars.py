"""A symbol's bars as contiguous arrays, checked: what strategies and the engine read.

Frames come in with the platform's bar columns (``symbol, window_start, open, high, low, close,
volume`` and optionally ``window_end, notional, timeframe``); :func:`split_bars` checks them and
returns one :class:`BarSeries` per symbol plus the rows it refused, each with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from tickforge.platform.bars.timeframes import timeframe_ms

REQUIRED_COLUMNS = ("symbol", "window_start", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
DAILY = "1d"
SESSION_ZONE = "America/New_York"
TRADING_DAYS_PER_YEAR = 252
DEAD_LETTER_COLUMNS = ("symbol", "window_start", "reason")
NEW_YORK = ZoneInfo(SESSION_ZONE)


class BarsError(ValueError):
    """Bars that cannot be backtested at all (missing columns, out-of-order rows)."""


@dataclass(frozen=True)
class BarSeries:
    """One symbol's bars in time order. ``session_last[i]``: bar i ends its session (intraday only)."""

    symbol: str
    timeframe: str
    window_start: np.ndarray  # int64 UTC epoch ms
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    notional: np.ndarray  # traded value; typical price x volume where the source has none
    session_id: np.ndarray  # int64, increasing; one per New York trading day
    session_last: np.ndarray  # bool
    bars_per_year: float

    @property
    def intraday(self) -> bool:
        return self.timeframe != DAILY

    def __len__(self) -> int:
        return len(self.close)

    def head(self, n: int) -> BarSeries:
        """The first ``n`` bars (the history a live runner holds at bar ``n - 1``)."""
        cut = {f: getattr(self, f)[:n] for f in _ARRAY_FIELDS}
        return BarSeries(self.symbol, self.timeframe, **cut, bars_per_year=self.bars_per_year)


_ARRAY_FIELDS = ("window_start", "open", "high", "low", "close", "volume", "notional", "session_id", "session_last")


def ny_midnight_ms(day: date) -> int:
    """00:00 America/New_York of ``day`` as UTC epoch ms (a daily bar's ``window_start``)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=NEW_YORK).timestamp()) * 1000


def next_ny_midnight_ms(day: date) -> int:
    return ny_midnight_ms(day + timedelta(days=1))


def timeframe_name(length_ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if length_ms % size == 0:
            return f"{length_ms // size}{unit}"
    return f"{length_ms}ms"


def split_bars(frame: pl.DataFrame, timeframe: str | None = None) -> tuple[list[BarSeries], pl.DataFrame]:
    """Check a bar frame and split it by symbol.

    Rows with a null, NaN or non-positive price, a negative or missing volume, or high/low not
    bracketing open and close are dead letters; so is a repeat of a ``(symbol, window_start)``
    (the first is kept). Rows of one symbol out of time order are a :class:`BarsError`: an
    unsorted file is not a file the engine can trust row by row.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise BarsError(f"bars lack columns {missing} (have {frame.columns})")
    timeframe = timeframe or _timeframe_of(frame)
    timeframe_ms(timeframe)
    has_notional = "notional" in frame.columns
    try:
        bars = frame.select(
            pl.col("symbol").cast(pl.String),
            pl.col("window_start").cast(pl.Int64),
            *(pl.col(c).cast(pl.Float64) for c in (*PRICE_COLUMNS, "volume")),
            (pl.col("notional").cast(pl.Float64) if has_notional else pl.lit(None, pl.Float64)).alias("notional"),
        ).with_row_index("row")
    except pl.exceptions.PolarsError as exc:
        raise BarsError(f"bars have a column of the wrong type: {exc}") from exc
    if bars["symbol"].null_count() or bars["window_start"].null_count():
        raise BarsError("bars have rows without a symbol or window_start")
    price_ok = pl.all_horizontal(
        pl.col(c).is_not_null() & pl.col(c).is_not_nan() & (pl.col(c) > 0) for c in PRICE_COLUMNS
    )
    reason = (
        pl.when(~price_ok)
        .then(pl.lit("null, NaN or non-positive price"))
        .when(pl.col("volume").is_null() | pl.col("volume").is_nan() | (pl.col("volume") < 0))
        .then(pl.lit("null, NaN or negative volume"))
        .when(
            (pl.col("high") < pl.max_horizontal("open", "close")) | (pl.col("low") > pl.min_horizontal("open", "close"))
        )
        .then(pl.lit("high/low do not bracket open and close"))
        .when(
            pl.col("window_start").is_duplicated().over("symbol")
            & (pl.col("row") != pl.col("row").min().over("symbol", "window_start"))
        )
        .then(pl.lit("duplicate (symbol, window_start)"))
    )
    bars = bars.with_columns(reason=reason)
    dead = bars.filter(pl.col("reason").is_not_null()).select(DEAD_LETTER_COLUMNS)
    good = bars.filter(pl.col("reason").is_null())
    backwards = good.filter(pl.col("window_start") < pl.col("window_start").shift().over("symbol"))
    if backwards.height:
        first = backwards.row(0, named=True)
        raise BarsError(
            f"bars of {first['symbol']} are not sorted by window_start (row {first['row'] + 1} goes back in time)"
        )
    series = [_series(part, timeframe) for part in good.partition_by("symbol", maintain_order=True)]
    return sorted(series, key=lambda s: s.symbol), dead


def _timeframe_of(frame: pl.DataFrame) -> str:
    if "timeframe" in frame.columns:
        names = frame["timeframe"].drop_nulls().unique().to_list()
        if len(names) != 1:
            raise BarsError(f"bars must hold one timeframe, found {sorted(names)}")
        return str(names[0])
    if "window_end" in frame.columns and frame.height:
        length = frame.select(
            (pl.col("window_end").cast(pl.Int64) - pl.col("window_start").cast(pl.Int64)).median()
        ).item()
        if length is not None and length > 0:
            return timeframe_name(int(length))
    raise BarsError("bars carry neither a timeframe nor window_end: pass the timeframe")


def _series(part: pl.DataFrame, timeframe: str) -> BarSeries:
    start = part["window_start"].to_numpy().astype(np.int64)
    high, low, close = (part[c].to_numpy().astype(np.float64) for c in ("high", "low", "close"))
    volume = part["volume"].to_numpy().astype(np.float64)
    notional = part["notional"].to_numpy().astype(np.float64) if part["notional"].null_count() == 0 else None
    if notional is None:
        notional = (high + low + close) / 3.0 * volume
    day = pl.from_epoch(part["window_start"], time_unit="ms").dt.convert_time_zone(SESSION_ZONE).dt.date()
    session = day.rle_id().to_numpy().astype(np.int64)
    intraday = timeframe != DAILY
    if intraday:
        session_last = np.append(session[1:] != session[:-1], True) if len(session) else np.zeros(0, bool)
        counts = np.bincount(session) if len(session) else np.zeros(1)
        bars_per_year = float(TRADING_DAYS_PER_YEAR * max(1.0, float(np.median(counts))))
    else:
        session_last = np.zeros(len(session), bool)
        bars_per_year = float(TRADING_DAYS_PER_YEAR)
    return BarSeries(
        symbol=str(part["symbol"][0]),
        timeframe=timeframe,
        window_start=start,
        open=part["open"].to_numpy().astype(np.float64),
        high=high,
        low=low,
        close=close,
        volume=volume,
        notional=notional,
        session_id=session,
        session_last=session_last,
        bars_per_year=bars_per_year,
    )
