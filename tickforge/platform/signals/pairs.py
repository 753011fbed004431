"""Pair statistics for a candidate pair on aligned closes (normally 1 m bars).

Over the most recent ``lookback`` bars where both legs have a bar: correlation of log returns,
OLS hedge ratio of ``a`` on ``b`` (``close_a = intercept + hedge_ratio * close_b + spread``),
Engle-Granger cointegration p-value (statsmodels ``coint``, constant term), the z-score of the last
spread value and the spread's half-life from an AR(1) fit on its changes. Nothing is published
(None) before ``min_history`` aligned bars, nor when a leg is flat over the window or the fit is
exact (the correlation, hedge ratio or z-score are undefined then).
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import polars as pl
from statsmodels.tsa.stattools import coint

from tickforge.platform.signals.kernels import sliding_windows, window_sum


class PairConfig(msgspec.Struct, frozen=True, kw_only=True):
    lookback: int = 240  # most recent aligned bars in the statistics
    min_history: int = 30  # aligned bars needed before anything is published

    def __post_init__(self) -> None:
        # Four points are the least an AR(1) with intercept on the spread's changes can fit.
        if self.min_history < 4 or self.lookback < self.min_history:
            raise ValueError("PairConfig needs 4 <= min_history <= lookback")


DEFAULT_CONFIG = PairConfig()


class PairStats(msgspec.Struct, frozen=True, kw_only=True):
    symbol_a: str
    symbol_b: str
    as_of: int  # window_end (epoch ms) of the last aligned bar
    n_obs: int  # aligned bars used
    return_correlation: float
    hedge_ratio: float
    intercept: float
    coint_pvalue: float
    spread: float  # last value of close_a - intercept - hedge_ratio * close_b
    spread_zscore: float
    half_life: float | None  # in bars; None when the spread does not revert (AR coefficient not in (0, 1))


def align_closes(bars: pl.DataFrame, symbol_a: str, symbol_b: str) -> pl.DataFrame:
    """``window_start, window_end, close_a, close_b`` of the bars both symbols have, in time order."""

    def leg(symbol: str, name: str) -> pl.DataFrame:
        return bars.filter(pl.col("symbol") == symbol).select("window_start", "window_end", pl.col("close").alias(name))

    return (
        leg(symbol_a, "close_a")
        .join(leg(symbol_b, "close_b").drop("window_end"), on="window_start", how="inner")
        .sort("window_start")
    )


def log_returns(close: np.ndarray) -> np.ndarray:
    close = np.asarray(close, np.float64)
    if (close <= 0).any():
        raise ValueError("closes must be positive for log returns")
    return np.log1p(np.diff(close) / close[:-1])


def return_correlation(close_a: np.ndarray, close_b: np.ndarray) -> float:
    """Pearson correlation of the two legs' log returns (NaN if a leg's returns are constant)."""
    ra, rb = log_returns(close_a), log_returns(close_b)
    da, db = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(da @ da) * float(db @ db))
    return float(da @ db) / denominator if denominator > 0 else math.nan


def rolling_return_correlation(close_a: np.ndarray, close_b: np.ndarray, window: int) -> np.ndarray:
    """Correlation of the last ``window`` log returns at each bar; NaN until ``window`` returns exist."""
    ra, rb = log_returns(close_a), log_returns(close_b)
    out = np.full(len(ra) + 1, np.nan)
    if len(ra) < window:
        return out
    wa, wb = sliding_windows(ra, window), sliding_windows(rb, window)
    da = wa - window_sum(wa) / window
    db = wb - window_sum(wb) / window
    with np.errstate(invalid="ignore", divide="ignore"):
        out[window:] = window_sum(da * db) / np.sqrt(window_sum(da * da) * window_sum(db * db))
    return out


def hedge_ratio(close_a: np.ndarray, close_b: np.ndarray) -> tuple[float, float]:
    """OLS ``close_a = intercept + beta * close_b``: ``(beta, intercept)``, from centred sums."""
    a, b = np.asarray(close_a, np.float64), np.asarray(close_b, np.float64)
    db = b - b.mean()
    beta = float(db @ (a - a.mean())) / float(db @ db)
    return beta, float(a.mean() - beta * b.mean())


def spread_zscore(spread: np.ndarray) -> float:
    """``(last - mean) / std`` of the spread over the window (sample standard deviation)."""
    return float((spread[-1] - spread.mean()) / spread.std(ddof=1))


def half_life(spread: np.ndarray) -> float | None:
    """Bars for a deviation to halve under ``d_t = c + lam * s_{t-1}``: ``ln 0.5 / ln(1 + lam)``.

    None when ``1 + lam`` is not in (0, 1): the fitted spread does not revert monotonically.
    """
    lagged = spread[:-1] - spread[:-1].mean()
    change = np.diff(spread)
    spread_var = float(lagged @ lagged)
    if spread_var == 0.0:
        return None
    lam = float(lagged @ (change - change.mean())) / spread_var
    phi = 1.0 + lam
    if not 0.0 < phi < 1.0:
        return None
    return math.log(0.5) / math.log(phi)


def coint_pvalue(close_a: np.ndarray, close_b: np.ndarray) -> float:
    """Engle-Granger p-value of ``a`` on ``b`` with a constant (statsmodels' MacKinnon p-value)."""
    return float(coint(close_a, close_b, trend="c")[1])


def pair_stats(
    close_a: np.ndarray,
    close_b: np.ndarray,
    *,
    symbol_a: str,
    symbol_b: str,
    as_of: int,
    config: PairConfig = DEFAULT_CONFIG,
) -> PairStats | None:
    """Statistics over the last ``config.lookback`` aligned closes; None before ``min_history``."""
    a = np.asarray(close_a, np.float64)[-config.lookback :]
    b = np.asarray(close_b, np.float64)[-config.lookback :]
    if len(a) != len(b):
        raise ValueError("the legs must be aligned (same length)")
    if len(a) < config.min_history or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    correlation = return_correlation(a, b)
    if math.isnan(correlation):
        return None
    beta, intercept = hedge_ratio(a, b)
    spread = a - intercept - beta * b
    if spread.std() == 0.0:
        return None
    return PairStats(
        symbol_a=symbol_a,
        symbol_b=symbol_b,
        as_of=as_of,
        n_obs=len(a),
        return_correlation=correlation,
        hedge_ratio=beta,
        intercept=intercept,
        coint_pvalue=coint_pvalue(a, b),
        spread=float(spread[-1]),
        spread_zscore=spread_zscore(spread),
        half_life=half_life(spread),
    )


def pair_stats_from_bars(
    bars: pl.DataFrame, symbol_a: str, symbol_b: str, config: PairConfig = DEFAULT_CONFIG
) -> PairStats | None:
    """:func:`pair_stats` on the bars (``symbol, window_start, window_end, close``) of both legs."""
    aligned = align_closes(bars, symbol_a, symbol_b).tail(config.lookback)
    if aligned.is_empty():
        return None
    return pair_stats(
        aligned["close_a"].to_numpy(),
        aligned["close_b"].to_numpy(),
        symbol_a=symbol_a,
        symbol_b=symbol_b,
        as_of=int(aligned["window_end"][-1]),
        config=config,
    )
