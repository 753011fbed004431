"""Strategies: pure functions from a symbol's bars to a target position per bar in {-1, 0, +1}.

A target at bar t uses information up to and including bar t's close. Each strategy names the
indicator series it reads (computed once per series and period, however many grid points share
them) and a compiled rule that turns the indicator values at a bar, and the previous target, into
the new target. The backtest engine, the sweeps and the live runners call the same rule:
``STRATEGIES[name].targets(bars, params)`` over a history, or ``.latest(bars, params)`` for the
decision at its last bar.

Indicators are defined over the whole series (no session reset); a strategy holds no position
until the indicators it reads are defined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from tickforge.research import indicators as ind
from tickforge.research.bars import BarSeries

# Rule ids the compiled kernels dispatch on.
EMA_CROSS, RSI_REVERSION, DONCHIAN_BREAKOUT, MACD_CROSS, BOLLINGER_REVERSION, VWAP_REVERSION, ORB_BREAKOUT = range(7)
MAX_SERIES = 3  # indicator series a rule reads per bar
MAX_SCALARS = 3


@njit(cache=True, nogil=True)
def decide(rule: int, prev: int, close: float, x0: float, x1: float, x2: float, s0: float, s1: float, s2: float) -> int:
    """The target at one bar from the indicator values ``x*`` at that bar and the scalars ``s*``."""
    if rule == EMA_CROSS or rule == MACD_CROSS:  # x0 fast line, x1 slow line, s0 allow_short
        if np.isnan(x0) or np.isnan(x1):
            return 0
        if x0 > x1:
            return 1
        if x0 < x1 and s0 > 0.0:
            return -1
        return 0
    if rule == RSI_REVERSION:  # x0 rsi, s0 lower, s1 upper
        if np.isnan(x0):
            return prev
        if prev == 0 and x0 < s0:
            return 1
        if prev == 1 and x0 > s1:
            return 0
        return prev
    if rule == DONCHIAN_BREAKOUT:  # x0 prior highest high, x1 prior lowest low
        if np.isnan(x0) or np.isnan(x1):
            return prev
        if prev == 0 and close > x0:
            return 1
        if prev == 1 and close < x1:
            return 0
        return prev
    if rule == BOLLINGER_REVERSION:  # x0 lower, x1 middle, x2 upper, s0 allow_short
        if np.isnan(x0) or np.isnan(x1) or np.isnan(x2):
            return prev
        if prev == 0:
            if close < x0:
                return 1
            if s0 > 0.0 and close > x2:
                return -1
            return 0
        if prev == 1 and close >= x1:
            return 0
        if prev == -1 and close <= x1:
            return 0
        return prev
    if rule == VWAP_REVERSION:  # x0 vwap, s0 band (fraction), s1 allow_short
        if np.isnan(x0):
            return prev
        if prev == 0:
            if close < x0 * (1.0 - s0):
                return 1
            if s1 > 0.0 and close > x0 * (1.0 + s0):
                return -1
            return 0
        if prev == 1 and close >= x0:
            return 0
        if prev == -1 and close <= x0:
            return 0
        return prev
    if rule == ORB_BREAKOUT:  # x0 range high, x1 range low, s0 allow_short
        if np.isnan(x0) or np.isnan(x1):
            return 0  # before the range is set: a new session starts flat
        if prev == 0:
            if close > x0:
                return 1
            if s0 > 0.0 and close < x1:
                return -1
            return 0
        if prev == 1 and close < x1:
            return 0
        if prev == -1 and close > x0:
            return 0
        return prev
    return 0


@njit(cache=True, nogil=True)
def fill_targets(
    rule: int, close: np.ndarray, series: np.ndarray, rows: np.ndarray, scalars: np.ndarray, out: np.ndarray
) -> None:
    """``out[t]``: the target at every bar; ``series[rows[j], t]`` is the rule's j-th input (row -1: none)."""
    prev = 0
    for t in range(close.shape[0]):
        x0 = series[rows[0], t] if rows[0] >= 0 else np.nan
        x1 = series[rows[1], t] if rows[1] >= 0 else np.nan
        x2 = series[rows[2], t] if rows[2] >= 0 else np.nan
        prev = decide(rule, prev, close[t], x0, x1, x2, scalars[0], scalars[1], scalars[2])
        out[t] = prev


@dataclass(frozen=True)
class Param:
    """A strategy parameter: its type, default (None: required) and bounds."""

    name: str
    kind: type
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None

    def coerce(self, strategy: str, value: Any) -> Any:
        where = f"{strategy}.{self.name}"
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.strip().lower() in ("true", "1", "yes")
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
        if not np.isfinite(number):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        if self.kind is int:
            if number != int(number):
                raise ValueError(f"{where}: expected an integer, got {value!r}")
            number = int(number)
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"{where}: {value!r} is below the minimum {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"{where}: {value!r} is above the maximum {self.maximum:g}")
        return number


# An indicator series is named by a key: (indicator, its arguments..., which output).
SeriesKey = tuple
_INDICATORS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    "ema": lambda b, period: (ind.ema(b.close, period),),
    "rsi": lambda b, period: (ind.rsi(b.close, period),),
    "channel": lambda b, period: ind.prior_channel(b.high, b.low, period),
    "macd": lambda b, fast, slow, signal: ind.macd(b.close, fast, slow, signal),
    "bollinger": lambda b, period, ndev: ind.bollinger(b.close, period, ndev),
    "vwap": lambda b, period: (ind.rolling_vwap(b.notional, b.volume, period),),
    "opening_range": lambda b, bars: ind.opening_range(b.high, b.low, b.session_id, bars),
}


def compute_series(bars: BarSeries, keys: list[SeriesKey]) -> np.ndarray:
    """``(len(keys), len(bars))`` matrix of the series; each indicator call is made once."""
    out = np.empty((max(len(keys), 1), len(bars)))
    done: dict[tuple, tuple[np.ndarray, ...]] = {}
    for row, key in enumerate(keys):
        call, output = key[:-1], key[-1]
        if call not in done:
            done[call] = _INDICATORS[call[0]](bars, *call[1:])
        out[row] = done[call][output]
    return out


@dataclass(frozen=True)
class Inputs:
    """What a rule reads for one parameter set: indicator series keys and scalars."""

    series: tuple[SeriesKey, ...]
    scalars: tuple[float, ...] = ()


@dataclass(frozen=True)
class Strategy:
    name: str
    rule: int
    params: tuple[Param, ...]
    inputs: Callable[..., Inputs]
    doc: str
    intraday_only: bool = False
    constraint: Callable[[Mapping[str, Any]], str | None] = field(default=lambda p: None)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def validate(self, params: Mapping[str, Any], check_constraint: bool = True) -> dict[str, Any]:
        """Known names, right types, defaults filled in; a ValueError naming the key otherwise."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter {unknown[0]!r} (known: {', '.join(known)})")
        out = {}
        for p in self.params:
            if p.name in params:
                out[p.name] = p.coerce(self.name, params[p.name])
            elif p.default is None:
                raise ValueError(f"{self.name}: missing parameter {p.name!r}")
            else:
                out[p.name] = p.default
        problem = self.constraint(out) if check_constraint else None
        if problem:
            raise ValueError(f"{self.name}: {problem}")
        return out

    def check_bars(self, bars: BarSeries) -> None:
        if self.intraday_only and not bars.intraday:
            raise ValueError(f"{self.name} needs intraday bars, got {bars.timeframe} bars of {bars.symbol}")

    def plan(self, params: Mapping[str, Any]) -> tuple[tuple[SeriesKey, ...], np.ndarray]:
        """Series keys and the padded scalar vector of one (validated) parameter set."""
        spec = self.inputs(**params)
        scalars = np.zeros(MAX_SCALARS)
        scalars[: len(spec.scalars)] = spec.scalars
        return spec.series, scalars

    def targets(self, bars: BarSeries, params: Mapping[str, Any]) -> np.ndarray:
        """Target position (int8 in {-1, 0, 1}) at every bar of ``bars``."""
        params = self.validate(params)
        self.check_bars(bars)
        keys, scalars = self.plan(params)
        series = compute_series(bars, list(keys))
        rows = np.full(MAX_SERIES, -1, np.int64)
        rows[: len(keys)] = np.arange(len(keys))
        out = np.zeros(len(bars), np.int8)
        fill_targets(self.rule, bars.close, series, rows, scalars, out)
        return out

    def latest(self, bars: BarSeries, params: Mapping[str, Any]) -> int:
        """The target decided at the last bar of ``bars`` (the history a live runner holds)."""
        out = self.targets(bars, params)
        return int(out[-1]) if len(out) else 0


STRATEGIES: dict[str, Strategy] = {}


def _register(
    rule: int,
    params: tuple[Param, ...],
    intraday_only: bool = False,
    constraint: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> Callable:
    def wrap(fn: Callable[..., Inputs]) -> Strategy:
        s = Strategy(
            fn.__name__, rule, params, fn, (fn.__doc__ or "").strip(), intraday_only, constraint or (lambda p: None)
        )
        STRATEGIES[s.name] = s
        return s

    return wrap


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})") from None


def _ordered(a: str, b: str) -> Callable[[Mapping[str, Any]], str | None]:
    return lambda p: None if p[a] < p[b] else f"needs {a} < {b}, got {a}={p[a]} {b}={p[b]}"


_PERIOD: dict[str, Any] = {"kind": int, "minimum": 1, "maximum": 100_000}


@_register(EMA_CROSS, (Param("fast", **_PERIOD), Param("slow", **_PERIOD), Param("allow_short", bool, False)))
def ema_cross(fast: int, slow: int, allow_short: bool) -> Inputs:
    """+1 when EMA(close, fast) > EMA(close, slow); -1 when it is below and ``allow_short``; else 0.

    0 until both EMAs are defined (bar ``max(fast, slow) - 1``).
    """
    return Inputs((("ema", fast, 0), ("ema", slow, 0)), (float(allow_short),))


@_register(
    RSI_REVERSION,
    (
        Param("period", kind=int, minimum=2, maximum=100_000),
        Param("lower", float, 30.0, 0, 100),
        Param("upper", float, 70.0, 0, 100),
    ),
    constraint=_ordered("lower", "upper"),
)
def rsi_reversion(period: int, lower: float, upper: float) -> Inputs:
    """Long only: flat -> long when RSI(period) < lower; long -> flat when RSI > upper; else keep."""
    return Inputs((("rsi", period, 0),), (lower, upper))


@_register(DONCHIAN_BREAKOUT, (Param("period", **_PERIOD),))
def donchian_breakout(period: int) -> Inputs:
    """Long only: flat -> long when close > the highest high of the previous ``period`` bars (the
    current bar excluded); long -> flat when close < their lowest low; else keep."""
    return Inputs((("channel", period, 0), ("channel", period, 1)))


@_register(
    MACD_CROSS,
    (Param("fast", **_PERIOD), Param("slow", **_PERIOD), Param("signal", **_PERIOD), Param("allow_short", bool, False)),
    constraint=_ordered("fast", "slow"),
)
def macd_cross(fast: int, slow: int, signal: int, allow_short: bool) -> Inputs:
    """+1 when the MACD line (TA-Lib MACD(fast, slow, signal)) is above its signal line; -1 when it is
    below and ``allow_short``; else 0. 0 until the signal line is defined (bar ``slow + signal - 2``)."""
    return Inputs((("macd", fast, slow, signal, 0), ("macd", fast, slow, signal, 1)), (float(allow_short),))


@_register(
    BOLLINGER_REVERSION,
    (
        Param("period", kind=int, minimum=2, maximum=100_000),
        Param("ndev", float, 2.0, 0.0, 100.0),
        Param("allow_short", bool, False),
    ),
)
def bollinger_reversion(period: int, ndev: float, allow_short: bool) -> Inputs:
    """Bands: TA-Lib BBANDS(period, ndev) (SMA middle, population deviation).
    Flat -> long when close < the lower band; long -> flat when close >= the middle band. With
    ``allow_short``: flat -> short when close > the upper band; short -> flat when close <= the middle.
    Otherwise keep."""
    return Inputs(tuple(("bollinger", period, float(ndev), j) for j in range(3)), (float(allow_short),))


@_register(
    VWAP_REVERSION,
    (Param("period", **_PERIOD), Param("band_bps", float, 50.0, 0.0, 10_000.0), Param("allow_short", bool, False)),
)
def vwap_reversion(period: int, band_bps: float, allow_short: bool) -> Inputs:
    """VWAP: traded value / volume over the last ``period`` bars (typical price x volume where the bars
    carry no notional; undefined while they traded nothing: keep). Flat -> long when close <
    VWAP x (1 - band_bps / 10,000); long -> flat when close >= VWAP. With ``allow_short``: flat -> short
    when close > VWAP x (1 + band_bps / 10,000); short -> flat when close <= VWAP. Otherwise keep."""
    return Inputs((("vwap", period, 0),), (band_bps / 10_000.0, float(allow_short)))


@_register(ORB_BREAKOUT, (Param("opening_bars", **_PERIOD), Param("allow_short", bool, False)), intraday_only=True)
def orb_breakout(opening_bars: int, allow_short: bool) -> Inputs:
    """Opening-range breakout, intraday bars only. The range is the high and low of each New York
    session's first ``opening_bars`` bars; from the bar after them: flat -> long when close > the
    range high; long -> flat when close < the range low; with ``allow_short`` flat -> short when
    close < the range low, short -> flat when close > the range high. Flat before the range is set
    (the engine also flattens every book at the session's last bar)."""
    return Inputs((("opening_range", opening_bars, 0), ("opening_range", opening_bars, 1)), (float(allow_short),))
