"""``tickforge topics plan``: the load each partition would carry, from a day of real trades."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def plan(
    symbols: Annotated[Path, typer.Option(help="A trades file (CSV, .csv.gz or Parquet): ticks per symbol.")],
    partitions: Annotated[
        list[int] | None, typer.Option(help="Partition counts to compare (default: the settings').")
    ] = None,
    pin: Annotated[
        list[str] | None, typer.Option(help="A hot symbol to give a partition of its own (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ticks per partition under CRC32(symbol) mod N, and with the hot symbols pinned."""
    from tickforge.platform.io.files import read_trades
    from tickforge.platform.settings import load_settings
    from tickforge.platform.topics import hot_symbols, partition_plan

    counts = {s: int(n) for s, n in read_trades(symbols).data["symbol"].value_counts().iter_rows()}
    plans: list[dict[str, Any]] = []
    for n in partitions or [load_settings().kafka.partitions]:
        for pinned in dict.fromkeys([(), tuple(pin or hot_symbols(counts, n))]):
            if len(pinned) >= n:
                continue
            loads = partition_plan(counts, n, pinned)
            busiest = max(load.share for load in loads)
            plans.append(
                {
                    "partitions": n,
                    "pinned": list(pinned),
                    "busiest_share": round(busiest, 4),
                    "balance": round(1 / (busiest * n), 3) if busiest else 1.0,
                    "loads": [
                        {
                            "partition": x.partition,
                            "ticks": x.ticks,
                            "share": round(x.share, 4),
                            "symbols": list(x.symbols),
                        }
                        for x in loads
                    ],
                }
            )
    if as_json:
        typer.echo(json.dumps(plans, indent=2))
        return
    for p in plans:
        pins = ", ".join(p["pinned"]) or "none"
        typer.echo(
            f"{p['partitions']} partitions, pinned: {pins}; busiest partition {p['busiest_share']:.1%} of "
            f"the ticks (balance {p['balance']:.2f}, 1 = even)"
        )
        for x in p["loads"]:
            typer.echo(f"  {x['partition']:>3} {x['ticks']:>12,} {x['share']:>7.1%}  {' '.join(x['symbols'][:8])}")
