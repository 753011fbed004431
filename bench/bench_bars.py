"""Bar kernel and wire-to-bars throughput on one core, each beside its baseline in the same run.

    .venv/bin/python bench/bench_bars.py [--symbols SPY,BAC,AIG] [--repeat 3]

Kernel: ticks (decoded columns, batches of one partition as on the wire) -> 1 s bars (and with 10 ms bins,
the bar worker's path) with the streaming BarBuilder, against a plain per-tick Python loop over tuples building the same
1 s bars (the usual consumer code). Wire: column-batch messages decoded as the bar worker does
(``decode_tick_message``: msgpack, then the buffers checked) and built, against one
``json.loads`` per tick message plus the loop. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import polars as pl

from tickforge.platform.bars.builder import BarBuilder
from tickforge.platform.contracts import BATCH_ENCODER, TradeBatch
from tickforge.platform.data_sets import full_or_sample
from tickforge.platform.io.files import read_trades
from tickforge.streaming.codec import decode_tick_message

BATCH = 20_000


def loop_bars(ticks: list[tuple[str, int, float, float]]) -> dict:
    """The usual consumer: a dict of open bars, one Python step per tick."""
    bars: dict[tuple[str, int], list] = {}
    for symbol, ts, price, size in ticks:
        key = (symbol, ts - ts % 1000)
        bar = bars.get(key)
        if bar is None:
            bars[key] = [price, price, price, price, size, price * size, 1]
        else:
            if price > bar[1]:
                bar[1] = price
            if price < bar[2]:
                bar[2] = price
            bar[3] = price
            bar[4] += size
            bar[5] += price * size
            bar[6] += 1
    return bars


def kernel_bars(
    batches: list[tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    timeframes: tuple[str, ...] = ("1s",),
) -> int:
    builder = BarBuilder(list(timeframes))
    n = 0
    for names, index, ts, price, size in batches:
        codes = np.array([builder.symbols.code(s) for s in names], np.int32)
        builder.add_trade_columns(codes[index], ts, price, size)
        n += sum(len(c.bars) for c in builder.close())
    return n + sum(len(c.bars) for c in builder.close(flush=True))


def wire_bars(messages: list[bytes]) -> int:
    builder = BarBuilder(["1s"])
    n = 0
    for raw in messages:
        batch = decode_tick_message(raw)  # the bar worker's decode: msgpack, then the buffers checked
        assert isinstance(batch, TradeBatch)
        ts, price, size, ids = batch.arrays()
        names, index = batch.row_symbols()
        codes = np.array([builder.symbols.code(s) for s in names], np.int32)
        builder.add_trade_columns(codes[0] if index is None else codes[index], ts, price, size, ids)
        n += sum(len(c.bars) for c in builder.close())
    return n + sum(len(c.bars) for c in builder.close(flush=True))


def json_loop(messages: list[bytes]) -> int:
    ticks = []
    for raw in messages:
        d = json.loads(raw)
        ticks.append((d["symbol"], d["ts_ms"], d["price"], d["size"]))
    return len(loop_bars(ticks))


def best(fn, arg, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn(arg)
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", default="SPY,BAC,AIG")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=BATCH, help="ticks per batch (20k: the replay's wire batches)")
    args = parser.parse_args()
    data = read_trades(full_or_sample("us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz")).data
    data = data.filter(data["symbol"].is_in(args.symbols.split(",")))
    n = data.height
    # Batches of one partition's stream, as the replay publishes them (all symbols on one partition).
    batches = []
    names = data["symbol"].unique(maintain_order=True).to_list()
    index_all = data["symbol"].replace_strict(names, list(range(len(names))), return_dtype=pl.Int32).to_numpy()
    for start in range(0, n, args.batch):
        part = data.slice(start, args.batch)
        batches.append(
            (
                names,
                index_all[start : start + args.batch],
                part["ts_ms"].to_numpy(),
                part["price"].to_numpy(),
                part["size"].to_numpy(),
            )
        )
    tuples = list(
        zip(
            data["symbol"].to_list(),
            data["ts_ms"].to_list(),
            data["price"].to_list(),
            data["size"].to_list(),
            strict=True,
        )
    )
    messages = [BATCH_ENCODER.encode(TradeBatch.from_rows(s, i, t, p, z)) for s, i, t, p, z in batches]
    json_messages = [json.dumps({"ts_ms": t, "symbol": s, "price": p, "size": z}).encode() for s, t, p, z in tuples]
    kernel_s, kernel_n = best(kernel_bars, batches, args.repeat)
    bins_s, bins_n = best(lambda b: kernel_bars(b, ("10ms", "1s")), batches, args.repeat)
    loop_s, loop_n = best(loop_bars, tuples, args.repeat)
    wire_s, wire_n = best(wire_bars, messages, args.repeat)
    json_s, _ = best(json_loop, json_messages, max(1, args.repeat - 1))
    print(
        json.dumps(
            {
                "ticks": n,
                "batch": args.batch,
                "bars_1s": kernel_n,
                "kernel_ticks_per_s": round(n / kernel_s),
                "kernel_with_10ms_bins_ticks_per_s": round(n / bins_s),
                "bins_and_bars_1s": bins_n,
                "loop_ticks_per_s": round(n / loop_s),
                "kernel_vs_loop": round(loop_s / kernel_s, 1),
                "wire_ticks_per_s": round(n / wire_s),
                "json_loop_ticks_per_s": round(n / json_s),
                "wire_vs_json_loop": round(json_s / wire_s, 1),
                "loop_bars_1s": len(loop_n),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
