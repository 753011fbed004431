"""Backtest sweep benchmark; prints one JSON object.

The EMA-cross grid (fast 5..50 step 5 x slow 20..200 step 10, fast < slow: 174 points) over the ten
daily symbols (adjusted), costs fee 1 bp and slippage 2 bp, in one run with:
  * this engine (``tickforge.research.engine.sweep``): warm throughput (best of ``--repeat``), the cold
    first sweep in a fresh process with an empty numba cache (compile included) and with a warm one;
  * vectorbt ``Portfolio.from_signals`` on the same targets (entries/exits shifted one bar, filled at
    the open, ``size=inf``), its JIT compile timed apart from its warm throughput;
  * the per-bar pure-Python reference of the tests, on ``--python-points`` grid points.
Asserts the three agree to 1e-9 on every trade and on the equity curve (vectorbt leaves the last
position open; this engine closes it at the last close, so the last bar of an open book is skipped).
Throughput is bar-combinations per second: bars x grid points per second.

Run pinned to one core (the machine is shared):
    taskset -c 0 .venv/bin/python bench/bench_backtest.py [--repeat 3 --python-points 4]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numba
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.unit.test_research_reference import daily_bars, ref_book, ref_targets  # noqa: E402
from tickforge.research.engine import Costs, backtest, sweep  # noqa: E402
from tickforge.research.grid import expand_grid  # noqa: E402
from tickforge.research.io import read_bars  # noqa: E402
from tickforge.research.strategies import get_strategy  # noqa: E402

DAILY = REPO / "data" / "samples" / "us_equity_daily_bars_10_symbols_1998-2021.csv.gz"
COSTS = Costs(fee_bps=1.0, slippage_bps=2.0, initial_cash=100_000.0)
AXES = {"fast": "5:50:5", "slow": "20:200:10"}
TOL = 1e-9

_COLD = """
import time, sys
sys.path.insert(0, {repo!r})
start = time.perf_counter()
from tickforge.research.engine import Costs, sweep
from tickforge.research.grid import expand_grid
from tickforge.research.io import read_bars
from tickforge.research.strategies import get_strategy
series, _ = read_bars({daily!r})
grid = expand_grid(get_strategy("ema_cross"), {axes!r}, ["fast < slow"])
sweep(series, "ema_cross", grid, Costs(1.0, 2.0, 100000.0))
print(time.perf_counter() - start)
"""


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def cold_sweep(cache_dir: str) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    code = _COLD.format(repo=str(REPO), daily=str(DAILY), axes=AXES)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python-points", type=int, default=4)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    numba.set_num_threads(min(cores, numba.config.NUMBA_NUM_THREADS))

    with tempfile.TemporaryDirectory() as cache:
        cold_compile = cold_sweep(cache)  # empty cache: every kernel compiled
        cold_cached = cold_sweep(cache)  # a fresh process on the cache the first one wrote

    series, _ = read_bars(DAILY)
    strategy = get_strategy("ema_cross")
    grid = expand_grid(strategy, AXES, ["fast < slow"])
    bar_combos = sum(len(s) for s in series) * len(grid)
    sweep(series, strategy, grid, COSTS)
    warm = min(_timed(lambda: sweep(series, strategy, grid, COSTS)) for _ in range(args.repeat))
    results = sweep(series, strategy, grid, COSTS)

    # engine trades and equity per (symbol, point): the ones everything is compared against
    engine = {(s.symbol, i): backtest(s, strategy, p, COSTS) for s in series for i, p in enumerate(grid)}
    for (symbol, _point), bt in engine.items():
        row = results.filter((results["symbol"] == symbol) & (results["params"] == bt.metrics["params"])).row(
            0, named=True
        )
        assert close(row["total_return"], bt.metrics["total_return"]) and row["n_trades"] == bt.metrics["n_trades"]

    vbt_figures, vbt_trades = run_vectorbt(series, strategy, grid, engine, args.repeat)

    python_points = grid[: args.python_points]
    bars = daily_bars(DAILY)
    start = time.perf_counter()
    reference = {
        (symbol, i): ref_book(
            b, ref_targets("ema_cross", b, p), COSTS.fee_bps, COSTS.slippage_bps, COSTS.initial_cash, intraday=False
        )
        for symbol, b in bars.items()
        for i, p in enumerate(python_points)
    }
    python_seconds = time.perf_counter() - start
    python_combos = sum(len(b["close"]) for b in bars.values()) * len(python_points)
    for (symbol, i), ref in reference.items():
        bt = engine[(symbol, i)]
        got = bt.trades.to_dicts()
        assert len(got) == len(ref["trades"]), (symbol, i)
        for g, w in zip(got, ref["trades"], strict=True):
            assert all(close(g[k], w[k]) for k in ("entry_price", "exit_price", "units", "pnl")), (symbol, i, g, w)
        assert all(close(a, b) for a, b in zip(bt.equity["equity"].to_list(), ref["equity"], strict=True))

    print(
        json.dumps(
            {
                "grid_points": len(grid),
                "symbols": len(series),
                "bar_combinations": bar_combos,
                "cores_used": cores,
                "numba_threads": numba.get_num_threads(),
                "engine": {
                    "warm_seconds": round(warm, 4),
                    "bar_combinations_per_s": round(bar_combos / warm),
                    "cold_first_sweep_seconds_empty_cache": round(cold_compile, 2),
                    "cold_first_sweep_seconds_cached": round(cold_cached, 2),
                },
                "vectorbt": vbt_figures,
                "python_loop": {
                    "grid_points": len(python_points),
                    "seconds": round(python_seconds, 2),
                    "bar_combinations_per_s": round(python_combos / python_seconds),
                },
                "engine_vs_vectorbt_warm": round(vbt_figures["warm_seconds"] / warm, 1),
                "engine_vs_python": round((bar_combos / warm) / (python_combos / python_seconds), 1),
                "agreement": {
                    "tolerance": TOL,
                    "trades_compared_with_vectorbt": vbt_trades,
                    "books_compared_with_python": len(reference),
                },
            },
            indent=2,
        )
    )


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_vectorbt(series, strategy, grid, engine, repeat: int) -> tuple[dict, int]:
    import pandas as pd
    import vectorbt as vbt

    inputs = []
    for s in series:
        targets = np.stack([strategy.targets(s, p) for p in grid], axis=1)
        held = np.zeros_like(targets)
        held[1:] = targets[:-1]  # the target decided at bar t acts at bar t+1's open
        index = pd.RangeIndex(len(s))
        frame = partial(pd.DataFrame, index=index)
        inputs.append(
            (s, frame(held == 1), frame(held == 0), pd.Series(s.open, index=index), pd.Series(s.close, index=index))
        )

    def run_all() -> list:
        return [
            vbt.Portfolio.from_signals(
                close,
                entries,
                exits,
                price=open_,
                size=np.inf,
                fees=COSTS.fee,
                slippage=COSTS.slippage,
                init_cash=COSTS.initial_cash,
                direction="longonly",
                accumulate=False,
                freq="1D",
            )
            for _, entries, exits, open_, close in inputs
        ]

    start = time.perf_counter()
    first = run_all()
    first_seconds = time.perf_counter() - start
    warm = min(_timed(run_all) for _ in range(repeat))
    compile_seconds = max(first_seconds - warm, 0.0)
    compared = 0
    for (s, *_), pf in zip(inputs, first, strict=True):
        value = pf.value().to_numpy()
        records = pf.trades.records_arr
        for i in range(len(grid)):
            bt = engine[(s.symbol, i)]
            mine = bt.trades.to_dicts()
            theirs = records[records["col"] == i]
            assert len(theirs) == len(mine), (s.symbol, i, len(theirs), len(mine))
            for k, (m, t) in enumerate(zip(mine, theirs, strict=True)):
                assert s.window_start[t["entry_idx"]] == m["entry_time"], (s.symbol, i, k)
                assert close(t["entry_price"], m["entry_price"]) and close(t["size"], m["units"]), (s.symbol, i, k)
                if t["status"] == 1:  # closed in vectorbt too
                    assert s.window_start[t["exit_idx"]] == m["exit_time"], (s.symbol, i, k)
                    assert close(t["exit_price"], m["exit_price"]) and close(t["pnl"], m["pnl"]), (s.symbol, i, k)
                compared += 1
            equity = bt.equity["equity"].to_numpy()
            open_at_end = bool(bt.equity["position"][-1] != 0)
            upto = len(equity) - 1 if open_at_end else len(equity)
            assert np.allclose(equity[:upto], value[:upto, i], rtol=TOL, atol=TOL), (s.symbol, i)
    bar_combos = sum(len(s) for s in series) * len(grid)
    return {
        "version": vbt.__version__,
        "warm_seconds": round(warm, 4),
        "bar_combinations_per_s": round(bar_combos / warm),
        "jit_compile_seconds": round(compile_seconds, 2),
        "first_call_seconds": round(first_seconds, 2),
    }, compared


if __name__ == "__main__":
    main()
