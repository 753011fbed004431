"""Batch signals over a table of 1 s bars (the offline side of the one definition in :mod:`.spec`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from tickforge.platform.signals import kernels as k
from tickforge.platform.signals.sessions import SessionTz, session_label_expr, validate_session_tz
from tickforge.platform.signals.spec import (
    BAR_INPUT_COLUMNS,
    BOLL_NDEV,
    BOLL_PERIOD,
    CARRIED_FIELDS,
    EMA_SLOW,
    INDICATOR_FIELDS,
    KEY_COLUMNS,
    READY_FROM_BAR,
    RV_WINDOW,
    SIGNAL_COLUMNS,
    VWAP_WINDOW,
)


def compute_signals(bars: pl.DataFrame, session_tz: SessionTz = "UTC") -> pl.DataFrame:
    """Signals of every bar, sorted by ``symbol, window_start``; a field is null until ready.

    ``bars`` holds 1 s bars with at least ``symbol, window_start, window_end, close, volume,
    notional`` (other bar columns are ignored) and optionally ``spread_bps, imbalance``, which are
    carried (NaN read as null). Each ``(symbol, window_start)`` must appear once.
    """
    missing = [c for c in BAR_INPUT_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}")
    validate_session_tz(session_tz)
    carried = [
        pl.col(c).cast(pl.Float64).fill_nan(None) if c in bars.columns else pl.lit(None, pl.Float64).alias(c)
        for c in CARRIED_FIELDS
    ]
    frame = bars.select(
        pl.col("symbol").cast(pl.String),
        pl.col("window_start", "window_end").cast(pl.Int64),
        pl.col("close", "volume", "notional").cast(pl.Float64),
        *carried,
    ).sort("symbol", "window_start")
    if any(frame[c].null_count() for c in ("symbol", "window_start", "close", "volume", "notional")):
        raise ValueError("bars have nulls in symbol, window_start, close, volume or notional")
    same_symbol = pl.col("symbol") == pl.col("symbol").shift()
    if frame.select((same_symbol & (pl.col("window_start") == pl.col("window_start").shift())).any()).item():
        raise ValueError("bars repeat a (symbol, window_start)")
    frame = frame.with_columns(session=session_label_expr(frame["symbol"].unique().to_list(), session_tz))
    new_segment = frame.select(
        (~same_symbol | (pl.col("session") != pl.col("session").shift())).fill_null(True)
    ).to_series()
    values = indicator_arrays(
        frame["close"].to_numpy(),
        frame["notional"].to_numpy(),
        frame["volume"].to_numpy(),
        np.flatnonzero(new_segment.to_numpy()),
    )
    indicators = [pl.Series(name, values[name], dtype=pl.Float64).fill_nan(None) for name in INDICATOR_FIELDS]
    return frame.select(*KEY_COLUMNS, *CARRIED_FIELDS).with_columns(indicators).select(SIGNAL_COLUMNS)


def indicator_arrays(
    close: np.ndarray, notional: np.ndarray, volume: np.ndarray, segment_starts: np.ndarray
) -> dict[str, np.ndarray]:
    """Every indicator of :data:`INDICATOR_FIELDS` for bars laid out session after session.

    ``segment_starts`` are the row indices where a (symbol, session) begins, ascending from 0.
    NaN marks a value that is not ready.
    """
    close = np.ascontiguousarray(close, np.float64)
    notional = np.ascontiguousarray(notional, np.float64)
    volume = np.ascontiguousarray(volume, np.float64)
    n = len(close)
    starts = np.asarray(segment_starts, np.int64)
    ends = np.append(starts[1:], n) if len(starts) else starts
    position = np.arange(n) - np.repeat(starts, ends - starts)  # 0-based bar index in its session
    out = {name: np.full(n, np.nan) for name in INDICATOR_FIELDS}

    # Windows run over the whole table: one that reaches back into the previous session ends at a
    # bar of the new session that is not ready yet, and that value is masked below.
    mean, std = k.window_mean_std(k.sliding_windows(close, BOLL_PERIOD))
    out["boll_mid"][BOLL_PERIOD - 1 :] = mean
    out["boll_upper"][BOLL_PERIOD - 1 :] = mean + BOLL_NDEV * std
    out["boll_lower"][BOLL_PERIOD - 1 :] = mean - BOLL_NDEV * std
    out["vwap_rolling"][VWAP_WINDOW - 1 :] = k.window_sum(k.sliding_windows(notional, VWAP_WINDOW)) / k.window_sum(
        k.sliding_windows(volume, VWAP_WINDOW)
    )
    squared = np.full(n, np.nan)  # squared[t]: the return from bar t-1 to bar t
    if n > 1:
        r = k.log_return(close[:-1], close[1:])
        squared[1:] = r * r
    out["realized_volatility"][RV_WINDOW - 1 :] = np.sqrt(k.window_sum(k.sliding_windows(squared, RV_WINDOW)))
    for name in ("boll_mid", "boll_upper", "boll_lower", "vwap_rolling", "realized_volatility"):
        out[name][position < READY_FROM_BAR[name] - 1] = np.nan

    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        c = close[a:b]
        ema12 = k.EMA12.series(c)
        ema26 = k.EMA26.series(c)
        macd = ema12 - ema26
        signal = np.full(b - a, np.nan)
        if b - a >= EMA_SLOW:
            signal[EMA_SLOW - 1 :] = k.EMA_SIGNAL.series(macd[EMA_SLOW - 1 :])
        out["ema12"][a:b] = ema12
        out["ema26"][a:b] = ema26
        out["macd"][a:b] = macd
        out["macd_signal"][a:b] = signal
        out["macd_hist"][a:b] = macd - signal
        if b - a > 1:
            gain, loss = k.gains_losses(c[1:] - c[:-1])
            out["rsi14"][a + 1 : b] = k.rsi_from_averages(k.WILDER.series(gain), k.WILDER.series(loss))
        out["vwap_session"][a:b] = np.cumsum(notional[a:b]) / np.cumsum(volume[a:b])
    return out
