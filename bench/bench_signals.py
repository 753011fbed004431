"""Signals benchmark; prints one JSON object.

(a) batch: ``compute_signals`` over one day of 1 s bars (SPY, BAC, AIG on 2013-10-08, built from
    the shared trades) against TA-Lib computing EMA12, EMA26, RSI14 and BBANDS(20, 2) on the same
    sessions in the same run;
(b) streaming: ``SignalState.update`` for many symbols at once (every field), against a per-bar,
    per-symbol pure-Python update of the same definitions, in the same run.

Best of ``--repeat`` runs (the machine is shared). Run:
    .venv/bin/python bench/bench_signals.py [--symbols 500 --bars 300 --python-bars 40 --repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import polars as pl
import talib

from tickforge.platform.data_sets import full_or_sample
from tickforge.platform.signals.batch import compute_signals, indicator_arrays
from tickforge.platform.signals.streaming import SignalState

NY = "America/New_York"


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def day_of_bars() -> pl.DataFrame:
    trades = pl.read_csv(
        full_or_sample("us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"),
        columns=["ts_ms", "symbol", "price", "size", "suspicious"],
        schema_overrides={"price": pl.Float64, "size": pl.Float64},
    )
    day = pl.from_epoch("ts_ms", "ms").dt.convert_time_zone(NY).dt.date()
    return (
        trades.filter((pl.col("suspicious") == 0) & (day == pl.date(2013, 10, 8)))
        .group_by("symbol", (pl.col("ts_ms") // 1000 * 1000).alias("window_start"), maintain_order=True)
        .agg(
            open=pl.col("price").first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=pl.col("price").last(),
            volume=pl.col("size").sum(),
            notional=(pl.col("price") * pl.col("size")).sum(),
            trade_count=pl.len(),
        )
        .with_columns(window_end=pl.col("window_start") + 1000, vwap=pl.col("notional") / pl.col("volume"))
        .sort("symbol", "window_start")
    )


def bench_batch(bars: pl.DataFrame, repeat: int) -> dict[str, object]:
    tz = dict.fromkeys(bars["symbol"].unique().to_list(), NY)
    sessions = [frame["close"].to_numpy() for frame in bars.partition_by("symbol", maintain_order=True)]
    close, notional, volume = (bars[c].to_numpy() for c in ("close", "notional", "volume"))
    starts = np.flatnonzero(
        bars.select(pl.col("symbol") != pl.col("symbol").shift()).to_series().fill_null(True).to_numpy()
    )

    def with_talib() -> None:
        for c in sessions:
            talib.EMA(c, timeperiod=12)
            talib.EMA(c, timeperiod=26)
            talib.RSI(c, timeperiod=14)
            talib.BBANDS(c, timeperiod=20, nbdevup=2, nbdevdn=2, matype=talib.MA_Type.SMA)

    n = bars.height
    full = best_of(repeat, lambda: compute_signals(bars, tz))
    core = best_of(repeat, lambda: indicator_arrays(close, notional, volume, starts))
    ta = best_of(repeat, with_talib)
    return {
        "bars": n,
        "sessions": len(sessions),
        "compute_signals_s": round(full, 4),
        "compute_signals_bars_per_s": round(n / full),
        "indicator_arrays_bars_per_s": round(n / core),
        "talib_4_indicators_s": round(ta, 4),
        "talib_4_indicators_bars_per_s": round(n / ta),
        "note": "compute_signals: all 12 fields + sessions + polars frame; indicator_arrays: the numpy core only",
    }


class PurePythonSignals:
    """One symbol's state updated bar by bar in plain Python: the same definitions (seeded EMAs,
    Wilder RSI, two-pass windows recomputed each bar, log1p returns) as the vectorized form."""

    def __init__(self) -> None:
        self.count = 0
        self.prev = math.nan
        self.ema = {12: [0.0, math.nan], 26: [0.0, math.nan], 9: [0.0, math.nan]}
        self.avg = [0.0, 0.0]
        self.cum_notional = self.cum_volume = 0.0
        self.closes: deque[float] = deque(maxlen=20)
        self.notionals: deque[float] = deque(maxlen=20)
        self.volumes: deque[float] = deque(maxlen=20)
        self.squares: deque[float] = deque(maxlen=60)

    def _ema(self, period: int, ordinal: int, x: float) -> float | None:
        state = self.ema[period]
        if ordinal < 1:
            return None
        if ordinal <= period:
            state[0] += x
            if ordinal < period:
                return None
            state[1] = state[0] / period
        else:
            state[1] += 2.0 / (period + 1) * (x - state[1])
        return state[1]

    def update(self, close: float, notional: float, volume: float) -> dict[str, float | None]:
        self.count += 1
        c = self.count
        out: dict[str, float | None] = {}
        e12, e26 = self._ema(12, c, close), self._ema(26, c, close)
        macd = None if e26 is None or e12 is None else e12 - e26
        signal = None if macd is None else self._ema(9, c - 25, macd)
        out.update(
            ema12=e12, ema26=e26, macd=macd, macd_signal=signal, macd_hist=None if signal is None else macd - signal
        )
        out["rsi14"] = None
        if c >= 2:
            change = close - self.prev
            gain, loss = max(change, 0.0), max(-change, 0.0)
            if c <= 15:
                self.avg[0] += gain / 14
                self.avg[1] += loss / 14
            else:
                self.avg[0] = (self.avg[0] * 13 + gain) / 14
                self.avg[1] = (self.avg[1] * 13 + loss) / 14
            if c >= 15:
                total = self.avg[0] + self.avg[1]
                out["rsi14"] = 0.0 if total == 0 else 100.0 * self.avg[0] / total
            r = math.log1p(change / self.prev)
            self.squares.append(r * r)
        self.prev = close
        self.cum_notional += notional
        self.cum_volume += volume
        out["vwap_session"] = self.cum_notional / self.cum_volume
        self.closes.append(close)
        self.notionals.append(notional)
        self.volumes.append(volume)
        if c >= 20:
            mean = sum(self.closes) / 20
            sd = math.sqrt(sum((x - mean) ** 2 for x in self.closes) / 20)
            out.update(boll_mid=mean, boll_upper=mean + 2 * sd, boll_lower=mean - 2 * sd)
            out["vwap_rolling"] = sum(self.notionals) / sum(self.volumes)
        out["realized_volatility"] = math.sqrt(sum(self.squares)) if c >= 61 else None
        return out


def bench_streaming(bars: pl.DataFrame, symbols: int, steps: int, python_steps: int, repeat: int) -> dict[str, object]:
    """Symbol i replays one of the day's real series from its own offset (realistic prices)."""
    series = [
        f.select("close", "notional", "volume").to_numpy() for f in bars.partition_by("symbol", maintain_order=True)
    ]
    warmup = 80  # past every readiness bar, so the timed updates publish every field
    total = warmup + steps
    data = np.empty((total, symbols, 3))
    for i in range(symbols):
        s = series[i % len(series)]
        offset = (i * 41) % (len(s) - total)
        data[:, i] = s[offset : offset + total]
    names = np.array([f"SYM{i:04d}" for i in range(symbols)], dtype=object)
    window_starts = 1_381_237_200_000 + 1000 * np.arange(total)

    def vectorized() -> None:
        state = SignalState()
        for t in range(warmup):
            state.update(names, data[t, :, 0], data[t, :, 1], data[t, :, 2], np.full(symbols, window_starts[t]))
        start = time.perf_counter()
        for t in range(warmup, total):
            state.update(names, data[t, :, 0], data[t, :, 1], data[t, :, 2], np.full(symbols, window_starts[t]))
        timings.append(time.perf_counter() - start)

    def pure_python() -> None:
        states = [PurePythonSignals() for _ in range(symbols)]
        rows = data.tolist()
        for t in range(warmup):
            for i, st in enumerate(states):
                st.update(*rows[t][i])
        start = time.perf_counter()
        for t in range(warmup, warmup + python_steps):
            for i, st in enumerate(states):
                st.update(*rows[t][i])
        py_timings.append(time.perf_counter() - start)

    timings: list[float] = []
    py_timings: list[float] = []
    for _ in range(repeat):
        vectorized()
        pure_python()
    vec_us = min(timings) / (symbols * steps) * 1e6
    py_us = min(py_timings) / (symbols * python_steps) * 1e6
    return {
        "symbols": symbols,
        "timed_updates": steps,
        "vectorized_us_per_symbol_bar": round(vec_us, 3),
        "vectorized_us_per_update_call": round(vec_us * symbols, 1),
        "pure_python_updates_timed": python_steps,
        "pure_python_us_per_symbol_bar": round(py_us, 3),
        "speedup": round(py_us / vec_us, 1),
        "target_us_per_symbol_bar": 2.0,
        "meets_target": vec_us < 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=300, help="timed vectorized updates (one bar per symbol each)")
    parser.add_argument("--python-bars", type=int, default=40, help="timed pure-Python updates per symbol")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bars = day_of_bars()
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "talib": talib.__version__,
        },
        "batch": bench_batch(bars, args.repeat),
        "streaming": bench_streaming(bars, args.symbols, args.bars, args.python_bars, args.repeat),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
