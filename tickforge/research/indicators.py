"""Indicators over a symbol's whole bar series (no session reset), TA-Lib conventions, NaN until defined.

EMA, Wilder RSI and Bollinger come from the platform's signal kernels (the same recursions and
window sums the live signals use), here with any period instead of the fixed live ones.
"""

from __future__ import annotations

import numpy as np

from tickforge.platform.signals import kernels as k


def ema(close: np.ndarray, period: int) -> np.ndarray:
    """TA-Lib EMA: seeded with the mean of the first ``period`` closes, NaN before."""
    return k.ema_smoother(period).series(close)


def rsi(close: np.ndarray, period: int) -> np.ndarray:
    """TA-Lib RSI (Wilder averages); defined from bar ``period`` (0-based)."""
    out = np.full(len(close), np.nan)
    if len(close) > 1:
        gain, loss = k.gains_losses(np.diff(close))
        smoother = k.wilder_smoother(period)
        out[1:] = k.rsi_from_averages(smoother.series(gain), smoother.series(loss))
    return out


def macd(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray]:
    """TA-Lib MACD line and signal line.

    As in TA-Lib, the fast EMA is seeded on the closes that end where the slow EMA's seed ends
    (``close[slow - fast : slow]``), and both lines are NaN until the signal EMA is seeded, at
    bar ``slow + signal - 2``. (The live signals' ``macd`` is EMA12 - EMA26 with separate seeds.)
    """
    n = len(close)
    line = np.full(n, np.nan)
    sig = np.full(n, np.nan)
    fast, slow = min(fast, slow), max(fast, slow)  # TA-Lib swaps them too
    start = slow - 1
    if n <= start:
        return line, sig
    fast_ema = np.full(n, np.nan)
    fast_ema[slow - fast :] = ema(close[slow - fast :], fast)
    raw = fast_ema - ema(close, slow)
    sig[start:] = ema(raw[start:], signal)
    ready = start + signal - 1
    line[ready:] = raw[ready:]
    sig[:ready] = np.nan
    return line, sig


def bollinger(close: np.ndarray, period: int, ndev: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TA-Lib BBANDS with an SMA middle and the population standard deviation: lower, middle, upper."""
    n = len(close)
    lower, middle, upper = (np.full(n, np.nan) for _ in range(3))
    if n >= period:
        mean, std = k.window_mean_std(k.sliding_windows(close, period))
        middle[period - 1 :] = mean
        lower[period - 1 :] = mean - ndev * std
        upper[period - 1 :] = mean + ndev * std
    return lower, middle, upper


def prior_channel(high: np.ndarray, low: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Highest high and lowest low of the ``period`` bars before each bar (the bar itself excluded)."""
    n = len(high)
    top = np.full(n, np.nan)
    bottom = np.full(n, np.nan)
    if n > period:
        top[period:] = k.sliding_windows(high, period).max(axis=0)[:-1]
        bottom[period:] = k.sliding_windows(low, period).min(axis=0)[:-1]
    return top, bottom


def rolling_vwap(notional: np.ndarray, volume: np.ndarray, period: int) -> np.ndarray:
    """Traded value over volume of the last ``period`` bars; NaN where they traded nothing."""
    out = np.full(len(volume), np.nan)
    if len(volume) >= period:
        value = k.window_sum(k.sliding_windows(notional, period))
        shares = k.window_sum(k.sliding_windows(volume, period))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[period - 1 :] = np.where(shares > 0, value / np.where(shares > 0, shares, 1.0), np.nan)
    return out


def opening_range(
    high: np.ndarray, low: np.ndarray, session_id: np.ndarray, bars: int
) -> tuple[np.ndarray, np.ndarray]:
    """High and low of each session's first ``bars`` bars, published from the bar after them on."""
    n = len(high)
    top = np.full(n, np.nan)
    bottom = np.full(n, np.nan)
    if n == 0:
        return top, bottom
    starts = np.flatnonzero(np.append(True, session_id[1:] != session_id[:-1]))
    ends = np.append(starts[1:], n)
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b - a > bars:
            top[a + bars : b] = high[a : a + bars].max()
            bottom[a + bars : b] = low[a : a + bars].min()
    return top, bottom
