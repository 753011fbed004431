"""The backtest engine: one compiled book per symbol, and sweeps over parameter grids.

Execution contract (every path): a target decided at bar t's close fills at bar t+1's open, at
open x (1 + s) buying and open x (1 - s) selling; fees fee x |notional| come out of cash. A change
p -> q closes p, then opens q with ``units = q x cash / (fill x (1 + fee))``. Equity at a close is
cash + units x close. An open position is closed at the last bar's close (intraday: at every
session's last bar too, and a target decided there is not carried into the next session).

A sweep runs, per grid point and in parallel over grid points, the strategy's rule over the
precomputed indicator series and then the book over every requested window, in one compiled
function; metrics are accumulated in the same pass (no equity curve is kept).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numba import njit, prange

from tickforge.research.bars import BarSeries
from tickforge.research.strategies import MAX_SERIES, Strategy, compute_series, fill_targets, get_strategy

METRICS = (
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "win_rate",
    "exposure",
    "turnover",
    "avg_holding_bars",
    "stability",
    "skew",
    "kurtosis",
    "n_bars",
    "final_equity",
)
(
    _TOTAL_RETURN,
    _SHARPE,
    _SORTINO,
    _MAX_DD,
    _N_TRADES,
    _WIN_RATE,
    _EXPOSURE,
    _TURNOVER,
    _HOLDING,
    _STABILITY,
    _SKEW,
    _KURTOSIS,
    _N_BARS,
    _FINAL_EQUITY,
) = range(len(METRICS))
_TRADE_FIELDS = 7  # entry bar, exit bar, side, entry price, exit price, units, pnl

TRADE_COLUMNS = ("symbol", "side", "entry_time", "entry_price", "exit_time", "exit_price", "units", "pnl")
EQUITY_COLUMNS = ("symbol", "window_start", "position", "equity")
RESULT_KEYS = ("symbol", "timeframe", "strategy", "params", "window", "sample", "period_start", "period_end")
RESULT_COLUMNS = (*RESULT_KEYS, "bars_per_year", *METRICS)


@dataclass(frozen=True)
class Costs:
    """Per-book costs: fee and slippage in basis points, and each symbol's starting cash."""

    fee_bps: float = 0.0
    slippage_bps: float = 0.0
    initial_cash: float = 100_000.0

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 10_000.0):
                raise ValueError(f"{name} must be in [0, 10000), got {value}")
        if not (math.isfinite(self.initial_cash) and self.initial_cash > 0):
            raise ValueError(f"initial_cash must be positive, got {self.initial_cash}")

    @property
    def fee(self) -> float:
        return self.fee_bps / 10_000.0

    @property
    def slippage(self) -> float:
        return self.slippage_bps / 10_000.0


@njit(cache=True, nogil=True)
def _exit(units: float, price: float, fee: float, slip: float) -> tuple[float, float, float]:
    """Cash change, fill price and |notional| of closing ``units`` at ``price``."""
    fill = price * (1.0 - slip) if units > 0.0 else price * (1.0 + slip)
    value = units * fill
    return value - fee * abs(value), fill, abs(value)


@njit(cache=True, nogil=True)
def _record(
    row: np.ndarray,
    entry_bar: int,
    exit_bar: int,
    side: int,
    entry_fill: float,
    exit_fill: float,
    units: float,
    pnl: float,
) -> None:
    row[0] = entry_bar
    row[1] = exit_bar
    row[2] = side
    row[3] = entry_fill
    row[4] = exit_fill
    row[5] = units
    row[6] = pnl


@njit(cache=True, nogil=True)
def run_book(
    open_: np.ndarray,
    close: np.ndarray,
    log_close: np.ndarray,
    session_last: np.ndarray,
    targets: np.ndarray,
    a: int,
    b: int,
    cash0: float,
    fee: float,
    slip: float,
    bars_per_year: float,
    metrics: np.ndarray,
    record: bool,
    equity_out: np.ndarray,
    position_out: np.ndarray,
    trades_out: np.ndarray,
) -> int:
    """One book over bars ``[a, b)`` starting flat with ``cash0``; writes ``metrics`` (see METRICS).

    With ``record``: equity and held position per bar into ``*_out[i - a]`` and the round trips
    into ``trades_out`` (returns their count). The book acts at bar a's open on the target decided
    at bar a - 1 (information from before the window).
    """
    cash = cash0
    units = 0.0
    pos = 0
    entry_bar = 0
    entry_fill = 0.0
    entry_cash = 0.0
    prev_eq = cash0
    peak = cash0
    max_dd = 0.0
    trough = cash0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    down_sq = 0.0
    y = 0.0
    eq_sum = 0.0
    traded = 0.0
    exposed = 0
    held_total = 0
    n_trades = 0
    wins = 0
    sy = 0.0
    syy = 0.0
    sty = 0.0
    log_ok = True
    log_units = 0.0
    n = b - a
    for i in range(a, b):
        want = 0
        if i > 0 and not session_last[i - 1]:
            want = targets[i - 1]
        if want != pos:
            if pos != 0:
                delta, fill, value = _exit(units, open_[i], fee, slip)
                cash += delta
                traded += value
                pnl = delta + entry_cash
                if record:
                    _record(trades_out[n_trades], entry_bar, i, pos, entry_fill, fill, abs(units), pnl)
                n_trades += 1
                wins += pnl > 0.0
                held_total += i - entry_bar
                units = 0.0
                pos = 0
            if want != 0 and cash > 0.0:
                fill = open_[i] * (1.0 + slip) if want > 0 else open_[i] * (1.0 - slip)
                units = want * cash / (fill * (1.0 + fee))
                value = units * fill
                entry_cash = -value - fee * abs(value)
                cash += entry_cash
                traded += abs(value)
                pos = want
                entry_bar = i
                entry_fill = fill
                if want > 0:
                    log_units = math.log(units / cash0)
        held = pos
        if held != 0:
            exposed += 1
        if pos != 0 and (i == b - 1 or session_last[i]):
            delta, fill, value = _exit(units, close[i], fee, slip)
            cash += delta
            traded += value
            pnl = delta + entry_cash
            if record:
                _record(trades_out[n_trades], entry_bar, i, pos, entry_fill, fill, abs(units), pnl)
            n_trades += 1
            wins += pnl > 0.0
            held_total += i - entry_bar + 1
            units = 0.0
            pos = 0
        eq = cash + units * close[i]
        if record:
            equity_out[i - a] = eq
            position_out[i - a] = held
        # Flat stretches leave equity unchanged: no division, no logarithm for them.
        moved = eq != prev_eq
        r = eq / prev_eq - 1.0 if moved and prev_eq != 0.0 else 0.0
        prev_eq = eq
        r2 = r * r
        s1 += r
        s2 += r2
        s3 += r2 * r
        s4 += r2 * r2
        if r < 0.0:
            down_sq += r2
        eq_sum += eq
        if eq > peak:
            peak = eq
            trough = eq
        elif eq < trough:
            trough = eq
            dd = 1.0 - trough / peak
            if dd > max_dd:
                max_dd = dd
        if moved:
            held_value = units * close[i]
            if pos > 0 and abs(cash) <= 1e-8 * held_value:
                # A long book is units x close plus a rounding residue of cash: log(units / cash0)
                # (once per entry) + log(close) (once per symbol) + log1p(residue), to first order
                # (the dropped term is below 1e-16): no logarithm per bar in the sweep.
                y = log_units + log_close[i] + cash / held_value
            elif eq > 0.0:
                y = math.log(eq / cash0)
            else:
                log_ok = False
        t = float(i - a)
        sy += y
        syy += y * y
        sty += t * y
    ann = math.sqrt(bars_per_year)
    metrics[:] = 0.0
    metrics[_N_BARS] = n
    metrics[_FINAL_EQUITY] = prev_eq
    metrics[_TOTAL_RETURN] = prev_eq / cash0 - 1.0
    metrics[_KURTOSIS] = 3.0
    # Central moments from power sums: per-bar returns are small and centred near 0, so the
    # cancellation costs a few digits of 16 (the tests hold them to 1e-9 of a two-pass reference).
    mean = s1 / n if n > 0 else 0.0
    c2 = s2 / n - mean * mean if n > 0 else 0.0
    if n > 1 and c2 > 0.0:
        c3 = s3 / n - 3.0 * mean * s2 / n + 2.0 * mean**3
        c4 = s4 / n - 4.0 * mean * s3 / n + 6.0 * mean * mean * s2 / n - 3.0 * mean**4
        metrics[_SHARPE] = mean / math.sqrt(c2 * n / (n - 1)) * ann
        metrics[_SKEW] = c3 / c2**1.5
        metrics[_KURTOSIS] = c4 / (c2 * c2)
    if down_sq > 0.0:
        metrics[_SORTINO] = mean / math.sqrt(down_sq / n) * ann
    metrics[_MAX_DD] = max_dd
    metrics[_N_TRADES] = n_trades
    if n_trades > 0:
        metrics[_WIN_RATE] = wins / n_trades
        metrics[_HOLDING] = held_total / n_trades
    if n > 0:
        metrics[_EXPOSURE] = exposed / n
        mean_eq = eq_sum / n
        if mean_eq > 0.0:
            metrics[_TURNOVER] = traded / mean_eq / (n / bars_per_year)
    st = n * (n - 1) / 2.0  # sums of t = 0 .. n-1 and of its squares
    stt = (n - 1) * n * (2 * n - 1) / 6.0
    if log_ok and n > 1:
        var_t = n * stt - st * st
        var_y = n * syy - sy * sy
        if var_t > 0.0 and var_y > 0.0:
            cov = n * sty - st * sy
            metrics[_STABILITY] = cov * cov / (var_t * var_y)
    return n_trades


@njit(cache=True, parallel=True)
def _sweep_kernel(
    rule: int,
    open_: np.ndarray,
    close: np.ndarray,
    log_close: np.ndarray,
    session_last: np.ndarray,
    series: np.ndarray,
    rows: np.ndarray,
    scalars: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    cash0: float,
    fee: float,
    slip: float,
    bars_per_year: float,
    out: np.ndarray,
) -> None:
    """``out[p, w]``: metrics of grid point p on window w; targets and books fused per grid point."""
    n = close.shape[0]
    empty_f = np.empty(0)
    empty_i = np.empty(0, np.int8)
    empty_t = np.empty((0, _TRADE_FIELDS))
    for p in prange(rows.shape[0]):
        targets = np.empty(n, np.int8)
        fill_targets(rule, close, series, rows[p], scalars[p], targets)
        for w in range(starts.shape[0]):
            run_book(
                open_,
                close,
                log_close,
                session_last,
                targets,
                starts[w],
                ends[w],
                cash0,
                fee,
                slip,
                bars_per_year,
                out[p, w],
                False,
                empty_f,
                empty_i,
                empty_t,
            )


def params_json(params: Mapping[str, Any]) -> str:
    """The canonical JSON object of a parameter set (sorted keys): the ``params`` column everywhere."""
    return json.dumps(dict(params), sort_keys=True)


@dataclass(frozen=True)
class Backtest:
    trades: pl.DataFrame  # TRADE_COLUMNS
    equity: pl.DataFrame  # EQUITY_COLUMNS
    metrics: dict[str, Any]  # symbol, strategy, params (JSON) and METRICS


def backtest(bars: BarSeries, strategy: str | Strategy, params: Mapping[str, Any], costs: Costs) -> Backtest:
    """The full-period backtest of one symbol with its trades and equity curve."""
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    params = strat.validate(params)
    targets = strat.targets(bars, params)
    n = len(bars)
    metrics = np.zeros(len(METRICS))
    equity = np.empty(n)
    position = np.empty(n, np.int8)
    trades = np.empty((n + 1, _TRADE_FIELDS))
    count = run_book(
        bars.open,
        bars.close,
        np.log(bars.close),
        bars.session_last,
        targets,
        0,
        n,
        costs.initial_cash,
        costs.fee,
        costs.slippage,
        bars.bars_per_year,
        metrics,
        True,
        equity,
        position,
        trades,
    )
    t = trades[:count]
    entry_bar, exit_bar = t[:, 0].astype(np.int64), t[:, 1].astype(np.int64)
    trade_frame = pl.DataFrame(
        {
            "symbol": [bars.symbol] * count,
            "side": np.where(t[:, 2] > 0, "long", "short").tolist() if count else [],
            "entry_time": bars.window_start[entry_bar],
            "entry_price": t[:, 3],
            "exit_time": bars.window_start[exit_bar],
            "exit_price": t[:, 4],
            "units": t[:, 5],
            "pnl": t[:, 6],
        },
        schema={
            "symbol": pl.String,
            "side": pl.String,
            "entry_time": pl.Int64,
            "entry_price": pl.Float64,
            "exit_time": pl.Int64,
            "exit_price": pl.Float64,
            "units": pl.Float64,
            "pnl": pl.Float64,
        },
    )
    equity_frame = pl.DataFrame(
        {
            "symbol": [bars.symbol] * n,
            "window_start": bars.window_start,
            "position": position,
            "equity": equity,
        },
        schema={"symbol": pl.String, "window_start": pl.Int64, "position": pl.Int8, "equity": pl.Float64},
    )
    row: dict[str, Any] = {
        "symbol": bars.symbol,
        "timeframe": bars.timeframe,
        "strategy": strat.name,
        "params": params_json(params),
        "bars_per_year": bars.bars_per_year,
    }
    row.update(_metric_values(metrics))
    return Backtest(trade_frame, equity_frame, row)


def _metric_values(values: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = dict(zip(METRICS, values.tolist(), strict=True))
    out["n_trades"] = int(out["n_trades"])
    out["n_bars"] = int(out["n_bars"])
    return out


@dataclass(frozen=True)
class Window:
    """A period of a sweep: ``[start_ms, end_ms)``; ``sample`` is full, in (sample) or out (of sample)."""

    index: int
    sample: str
    start_ms: int
    end_ms: int


FULL = Window(0, "full", -(2**62), 2**62)


def sweep(
    series: Sequence[BarSeries],
    strategy: str | Strategy,
    grid: Sequence[Mapping[str, Any]],
    costs: Costs,
    windows: Sequence[Window] = (FULL,),
    progress: Callable[[int], None] | None = None,
) -> pl.DataFrame:
    """Metrics of every grid point on every symbol and window: a frame of RESULT_COLUMNS.

    Windows with fewer than two bars of a symbol are left out for that symbol.
    """
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    points = [strat.validate(p) for p in grid]
    if not points:
        raise ValueError(f"{strat.name}: the grid is empty (after its constraints)")
    plans = [strat.plan(p) for p in points]
    keys = sorted({key for series_keys, _ in plans for key in series_keys}, key=repr)
    row_of = {key: j for j, key in enumerate(keys)}
    rows = np.full((len(points), MAX_SERIES), -1, np.int64)
    for p, (series_keys, _) in enumerate(plans):
        rows[p, : len(series_keys)] = [row_of[key] for key in series_keys]
    scalars = np.ascontiguousarray(np.stack([s for _, s in plans]))
    param_text = [params_json(p) for p in points]
    frames = []
    for done, bars in enumerate(series, 1):
        strat.check_bars(bars)
        starts = np.searchsorted(bars.window_start, [w.start_ms for w in windows]).astype(np.int64)
        ends = np.searchsorted(bars.window_start, [w.end_ms for w in windows]).astype(np.int64)
        keep = np.flatnonzero(ends - starts >= 2)
        if len(keep):
            values = np.zeros((len(points), len(keep), len(METRICS)))
            _sweep_kernel(
                strat.rule,
                bars.open,
                bars.close,
                np.log(bars.close),
                bars.session_last,
                compute_series(bars, keys),
                rows,
                scalars,
                starts[keep],
                ends[keep],
                costs.initial_cash,
                costs.fee,
                costs.slippage,
                bars.bars_per_year,
                values,
            )
            frames.append(_results_frame(bars, strat.name, param_text, [windows[int(k)] for k in keep], values))
        if progress is not None:
            progress(done)
    if not frames:
        return empty_results()
    return pl.concat(frames)


def empty_results() -> pl.DataFrame:
    return pl.DataFrame(schema=RESULT_SCHEMA)


RESULT_SCHEMA = pl.Schema(
    {
        "symbol": pl.String,
        "timeframe": pl.String,
        "strategy": pl.String,
        "params": pl.String,
        "window": pl.Int32,
        "sample": pl.String,
        "period_start": pl.Int64,
        "period_end": pl.Int64,
        "bars_per_year": pl.Float64,
        **{m: (pl.Int64 if m in ("n_trades", "n_bars") else pl.Float64) for m in METRICS},
    }
)


def _results_frame(
    bars: BarSeries, strategy: str, params: list[str], windows: list[Window], values: np.ndarray
) -> pl.DataFrame:
    n_points, n_windows, _ = values.shape
    flat = values.reshape(n_points * n_windows, len(METRICS))
    w_idx = np.tile(np.arange(n_windows), n_points)
    data: dict[str, Any] = {
        "symbol": [bars.symbol] * len(flat),
        "timeframe": [bars.timeframe] * len(flat),
        "strategy": [strategy] * len(flat),
        "params": np.repeat(np.array(params, dtype=object), n_windows).tolist(),
        "window": np.array([w.index for w in windows], np.int32)[w_idx],
        "sample": np.array([w.sample for w in windows], dtype=object)[w_idx].tolist(),
        "period_start": np.array([_bounds(bars, w)[0] for w in windows], np.int64)[w_idx],
        "period_end": np.array([_bounds(bars, w)[1] for w in windows], np.int64)[w_idx],
        "bars_per_year": np.full(len(flat), bars.bars_per_year),
    }
    for j, name in enumerate(METRICS):
        data[name] = flat[:, j]
    return pl.DataFrame(data).with_columns(pl.col(c).cast(t) for c, t in RESULT_SCHEMA.items())


def _bounds(bars: BarSeries, window: Window) -> tuple[int, int]:
    """A window's own bounds; the full period's are its first bar's start and one past its last's."""
    if window.sample == FULL.sample:
        return int(bars.window_start[0]), int(bars.window_start[-1]) + 1
    return window.start_ms, window.end_ms
