"""The offline path, whole process, beside its two baselines in the same run.

    .venv/bin/python bench/bench_offline.py [--trades FILE] [--repeat 3] [--cpus 0]

Each contender is its own process, timed on the wall clock from start to its Parquet written:

* ``tickforge``: ``tickforge bars build --timeframes 1s`` (reads and validates every row, dead
  letters, the streaming kernel's lateness rules, bars and dead letters to Parquet);
* ``csv_loop``: the usual consumer script, the csv module and one Python step per tick building
  1 s OHLCV bars, written to Parquet;
* ``polars_minimal``: ``read_csv``, ``group_by`` symbol and second, ``write_parquet``; it
  validates nothing.

Runs are interleaved (a, b, c, a, b, c, ...) so drift on a shared machine hits all three alike;
the figures are the best and the median of ``--repeat`` runs. ``--cpus`` pins every contender to
the same cores with ``taskset``. Prints one JSON object.

``tickforge`` gains on the wall clock from a second idle CPU (inflating, parsing and bar building
overlap); on a machine whose cores are all busy its wall ratios fall towards the CPU ratios, so
read them with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRADES = "us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"


def csv_loop(trades: str, out: str) -> None:
    """The usual consumer script: csv rows, a dict of open bars, one Python step per tick."""
    import csv
    import gzip

    bars: dict[tuple[str, int], list] = {}
    with gzip.open(trades, "rt", newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        at_ts, at_symbol, at_price, at_size = (header.index(c) for c in ("ts_ms", "symbol", "price", "size"))
        for row in rows:
            ts, price, size = int(row[at_ts]), float(row[at_price]), float(row[at_size])
            key = (row[at_symbol], ts - ts % 1000)
            bar = bars.get(key)
            if bar is None:
                bars[key] = [price, price, price, price, size, price * size, 1]
            else:
                bar[1] = max(bar[1], price)
                bar[2] = min(bar[2], price)
                bar[3] = price
                bar[4] += size
                bar[5] += price * size
                bar[6] += 1
    import polars as pl

    names = ["open", "high", "low", "close", "volume", "notional", "trade_count"]
    columns = {name: [bar[i] for bar in bars.values()] for i, name in enumerate(names)}
    pl.DataFrame({"symbol": [k[0] for k in bars], "window_start": [k[1] for k in bars], **columns}).write_parquet(out)


def polars_minimal(trades: str, out: str) -> None:
    """read_csv, group_by symbol and second, write_parquet; nothing validated."""
    import polars as pl

    # The four columns it needs with their types: no inference pass, nothing else parsed.
    types = {"ts_ms": pl.Int64, "symbol": pl.String, "price": pl.Float64, "size": pl.Float64}
    ticks = pl.read_csv(trades, columns=list(types), schema_overrides=types)
    bars = ticks.group_by("symbol", (pl.col("ts_ms") // 1000 * 1000).alias("window_start")).agg(
        pl.col("price").first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").last().alias("close"),
        pl.col("size").sum().alias("volume"),
        (pl.col("price") * pl.col("size")).sum().alias("notional"),
        pl.len().alias("trade_count"),
    )
    bars.write_parquet(out)


BASELINES = {"csv_loop": csv_loop, "polars_minimal": polars_minimal}


def command(name: str, trades: Path, out: Path, cpus: str | None) -> list[str]:
    if name == "tickforge":
        tickforge = Path(sys.executable).with_name("tickforge")
        argv = [str(tickforge), "bars", "build", "--trades", str(trades), "--timeframes", "1s", "--out", str(out)]
    else:
        argv = [
            sys.executable,
            __file__,
            "--baseline",
            name,
            "--trades",
            str(trades),
            "--out",
            str(out / "bars_1s.parquet"),
        ]
    return (["taskset", "-c", cpus] if cpus else []) + argv


def run(name: str, trades: Path, work: Path, cpus: str | None) -> tuple[float, float, int, int]:
    """Wall and CPU (user + system) seconds of one process, and the 1 s bars and trades in its
    Parquet. CPU time is the steadier figure when others share the machine."""
    import polars as pl

    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = command(name, trades, out, cpus)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True)  # no tty: no progress bar
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    bars = pl.read_parquet(out / "bars_1s.parquet", columns=["trade_count"])
    return seconds, cpu, bars.height, int(bars["trade_count"].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=Path, help="trades CSV(.gz); default the full shared five days")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpus", help="pin every contender with taskset -c CPUS (e.g. 0)")
    parser.add_argument("--baseline", choices=sorted(BASELINES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:  # one baseline process, started by the benchmark itself
        BASELINES[args.baseline](str(args.trades), args.out)
        return

    sys.path.insert(0, str(REPO))
    from tickforge.platform.data_sets import full_or_sample

    trades = args.trades or full_or_sample(TRADES)
    names = ["tickforge", "csv_loop", "polars_minimal"]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, tuple[int, int]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_offline_") as work:
        for _ in range(args.repeat):
            for name in names:
                took, used, n_bars, n_trades = run(name, trades, Path(work), args.cpus)
                seconds[name].append(took)
                cpu[name].append(used)
                outputs[name] = (n_bars, n_trades)
    ticks = outputs["csv_loop"][1]  # the loop counts every row it reads
    best = {name: min(s) for name, s in seconds.items()}
    figures = {
        name: {
            "seconds_best": round(best[name], 3),
            "seconds_median": round(statistics.median(seconds[name]), 3),
            "seconds_all": [round(s, 3) for s in seconds[name]],
            "cpu_seconds_best": round(min(cpu[name]), 3),
            "ticks_per_s": round(ticks / best[name]),
            "bars_1s": outputs[name][0],
            "trades_in_bars": outputs[name][1],
        }
        for name in names
    }
    print(
        json.dumps(
            {
                "trades_file": str(trades),
                "ticks": ticks,
                "repeat": args.repeat,
                "pinned_cpus": args.cpus,
                "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                "contenders": figures,
                "tickforge_speedup_vs_csv_loop": round(best["csv_loop"] / best["tickforge"], 2),
                "tickforge_time_vs_polars_minimal": round(best["tickforge"] / best["polars_minimal"], 2),
                # The same ratios on CPU seconds (user + system, all threads): steadier than the wall
                # clock when other work shares the machine, but blind to what a second core buys.
                "cpu_speedup_vs_csv_loop": round(min(cpu["csv_loop"]) / min(cpu["tickforge"]), 2),
                "cpu_time_vs_polars_minimal": round(min(cpu["tickforge"]) / min(cpu["polars_minimal"]), 2),
                "targets": {"speedup_vs_csv_loop_at_least": 4.0, "time_vs_polars_minimal_at_most": 1.5},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
