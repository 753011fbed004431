"""Pure numeric kernels shared by the batch and the streaming signals.

Batch and streaming must give bit-identical values, so every value is produced by the same
floating-point operations in the same order on both sides:

* Recursions (EMA, Wilder averages) run through ``scipy.signal.lfilter`` on both sides: over a
  whole session in batch, one step for many symbols in streaming. One compiled kernel means one
  rounding behaviour, even on platforms where a C compiler fuses ``z + b * x`` into an FMA.
* Window statistics are sums over a ``(W, n)`` stack of windows (row 0 the oldest value), added
  row by row in time order. Batch passes strided views of the whole series, streaming passes the
  windows gathered from its ring buffers; numpy's elementwise ops round each element the same way
  whatever the array's length or strides. (``ndarray.sum`` would not do: its pairwise order
  depends on the layout.)
* Windows are recomputed from their values at each bar instead of updated by adding the new value
  and subtracting the old one, so there is no drift over a long session and no cancellation:
  the variance is the corrected two-pass form (squared deviations from the window mean), which
  stays exact to a few ulps at prices of 61,000 that move by 0.01, where the textbook running
  sums of x and x**2 lose about 1e-6 of the variance.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from tickforge.platform.signals.spec import EMA_FAST, EMA_SLOW, MACD_SIGNAL, RSI_PERIOD

# Columns per block of deviations in window_mean_std: bounds a batch's temporaries to a few MB.
_CHUNK = 1 << 15
# Stacks up to this many columns are summed with np.cumsum (cheaper when the per-call cost dominates).
_NARROW = 64


class Smoother:
    """``y_t = (1 - alpha) * y_{t-1} + alpha * x_t``, seeded with the mean of the first ``period`` inputs.

    TA-Lib's EMA (``alpha = 2 / (period + 1)``) and Wilder's RSI averages (``alpha = 1 / period``)
    are both this recursion.
    """

    __slots__ = ("_a", "_b", "alpha", "decay", "period")

    def __init__(self, period: int, alpha: float) -> None:
        self.period = period
        self.alpha = alpha
        self.decay = 1.0 - alpha
        # lfilter computes y = z + b0 * x, then z = x * b1 - y * a1 = decay * y exactly (b1 = 0):
        # the same number as ``decay * y`` in numpy, so the streaming state is the value y itself.
        self._b = np.array([alpha, 0.0])
        self._a = np.array([1.0, -self.decay])

    def series(self, x: np.ndarray) -> np.ndarray:
        """The smoothed series of one session; NaN before the ``period``-th input."""
        y = np.full(len(x), np.nan)
        n = self.period
        if len(x) < n:
            return y
        # np.cumsum adds in order, as the streaming seed accumulator does.
        seed = np.cumsum(x[:n])[-1] / n
        y[n - 1] = seed
        if len(x) > n:
            y[n:], _ = lfilter(self._b, self._a, x[n:], zi=np.array([self.decay * seed]))
        return y

    def step(self, prev: np.ndarray, x: np.ndarray) -> np.ndarray:
        """One step for many independent series (any shape; ``prev`` and ``x`` alike)."""
        zi = (self.decay * prev).reshape(-1, 1)
        y, _ = lfilter(self._b, self._a, x.reshape(-1, 1), axis=1, zi=zi)
        return y.reshape(x.shape)


def ema_smoother(period: int) -> Smoother:
    return Smoother(period, 2.0 / (period + 1))


def wilder_smoother(period: int) -> Smoother:
    return Smoother(period, 1.0 / period)


# The recursions of the signal definition, shared by the batch and the streaming form.
EMA12 = ema_smoother(EMA_FAST)
EMA26 = ema_smoother(EMA_SLOW)
EMA_SIGNAL = ema_smoother(MACD_SIGNAL)
WILDER = wilder_smoother(RSI_PERIOD)


def sliding_windows(x: np.ndarray, width: int) -> np.ndarray:
    """``(width, len(x) - width + 1)`` view: column i is ``x[i : i + width]``, oldest value first."""
    if len(x) < width:
        return np.empty((width, 0))
    return sliding_window_view(x, width).T


def window_sum(windows: np.ndarray) -> np.ndarray:
    """Sum of each column of a ``(W, n)`` window stack, adding rows in time order."""
    if windows.shape[1] <= _NARROW:
        # One C call instead of W small ones; accumulate adds in the same order as the loop.
        return np.cumsum(windows, axis=0)[-1]
    total = windows[0].copy()
    for row in windows[1:]:
        total += row
    return total


def window_mean_std(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation of each window: the corrected two-pass form.

    ``var = (sum(d**2) - sum(d)**2 / W) / W`` with ``d = x - mean``: the second term cancels the
    rounding of the mean itself, so a flat window gives 0, not a few ulps of the price.
    """
    width, n = windows.shape
    mean = window_sum(windows) / width
    var = np.empty(n)
    for lo in range(0, n, _CHUNK):
        part = slice(lo, lo + _CHUNK)
        dev = windows[:, part] - mean[part]
        drift = window_sum(dev)
        var[part] = (window_sum(dev * dev) - drift * drift / width) / width
    # Rounding can leave a flat window's variance a hair below zero.
    return mean, np.sqrt(np.maximum(var, 0.0))


def log_return(prev: np.ndarray, close: np.ndarray) -> np.ndarray:
    """``log(close / prev)`` as ``log1p((close - prev) / prev)``.

    The difference of two nearby prices is exact, so a move of 0.01 at 61,000 keeps its full
    precision; ``log(close) - log(prev)`` would lose about 7 of its 16 digits.
    """
    return np.log1p((close - prev) / prev)


def gains_losses(change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(change, 0.0), np.maximum(-change, 0.0)


def rsi_from_averages(avg_gain: np.ndarray, avg_loss: np.ndarray) -> np.ndarray:
    """TA-Lib's ``100 * (gain / (gain + loss))``, and 0 while the session has not moved at all.

    This is TA-Lib 0.8's rule (an exactly zero ``gain + loss``). Releases up to 0.7 also gave 0
    when ``gain + loss`` was under 1e-8 in price units, i.e. after a quiet stretch whose length
    depends on the price scale (~150 unchanged closes at BAC's price); the reference tests pin
    ``ta-lib>=0.8``.
    """
    total = avg_gain + avg_loss
    flat = total == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = avg_gain / np.where(flat, 1.0, total)
    return np.where(flat, 0.0, 100.0 * ratio)
