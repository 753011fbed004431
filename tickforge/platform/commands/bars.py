"""``tickforge bars``: offline bars and validation against the independent reference."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import polars as pl

    from tickforge.platform.io.csv_chunks import ChunksAhead

bars_app = typer.Typer(
    help="Build bars from files and validate bars against an independent reference.", no_args_is_help=True
)


@bars_app.command("build")
def build(
    trades: Annotated[
        Path, typer.Option(help="Trades: CSV (optionally .gz) or Parquet with ts_ms,symbol,price,size[,trade_id].")
    ],
    out: Annotated[Path, typer.Option(help="Output folder for bars_<tf>.parquet and dead_letter.parquet.")],
    quotes: Annotated[Path | None, typer.Option(help="Quotes for spread_bps and imbalance on 1 s bars.")] = None,
    timeframes: Annotated[
        str, typer.Option(help="Comma list of timeframes (10ms, 1s, 1m, 3m, 5m, 15m, ...).")
    ] = "1s,1m,3m,5m,15m",
    lateness_ms: Annotated[
        int, typer.Option(help="Allowed lateness: a trade whose 10 ms bin closed this long ago is late.")
    ] = 500,
    partitions: Annotated[
        int, typer.Option(help="Mirror a live topic with this many partitions (per-partition watermarks).")
    ] = 1,
    pin: Annotated[
        list[str] | None,
        typer.Option(help="A pinned hot symbol of that topic, in its order (repeatable; kafka.pinned_symbols)."),
    ] = None,
) -> None:
    """Build clock-aligned bars from trade files with the streaming kernel, in file order."""
    from tickforge.platform.io.csv_chunks import ChunksAhead, is_parquet

    # Inflating the trades starts now, on a second CPU, while the kernels import.
    with nullcontext(None) if is_parquet(trades) else ChunksAhead(trades) as chunks:
        summary = _build(trades, out, quotes, timeframes, lateness_ms, partitions, chunks, pin or [])
    typer.echo(json.dumps(summary, indent=2))


def _build(
    trades: Path,
    out: Path,
    quotes: Path | None,
    timeframes: str,
    lateness_ms: int,
    partitions: int,
    chunks: ChunksAhead | None,
    pinned: list[str],
) -> dict[str, Any]:
    import os
    from concurrent.futures import Future, ThreadPoolExecutor

    from tickforge.platform.bars.offline import BarRun
    from tickforge.platform.bars.timeframes import parse_timeframes
    from tickforge.platform.io.bar_files import write_bars
    from tickforge.platform.io.files import read_quotes, stream_trades

    progress_bar = _progress_bar()
    tfs = parse_timeframes(timeframes)
    quote_file = None
    if quotes is not None:  # first: the bar builder takes the quotes before any trade
        with progress_bar(f"reading {quotes.name}", None) as update:
            quote_file = read_quotes(quotes, progress=update)
    run = BarRun(tfs, quote_file.data if quote_file is not None else None, lateness_ms, partitions, pinned=pinned)
    # Bars are built block by block while the file is read: on a second CPU, in one worker
    # thread (one, so blocks stay in file order; numpy and polars let go of the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool, progress_bar(f"reading {trades.name}", None) as update:
        added: list[Future[None]] = []
        on_rows = (
            (lambda rows: added.append(pool.submit(run.add, rows))) if len(os.sched_getaffinity(0)) > 1 else run.add
        )
        trade_file = stream_trades(trades, on_rows, progress=update, chunks=chunks)
        for done in added:
            done.result()
    result = run.finish(trade_file.dead_letters)
    paths = write_bars(result, out)
    return {
        "trades_read": trade_file.rows_read,
        "bars": {tf: frame.height for tf, frame in result.bars.items()},
        "dead_letters": result.dead_letters.group_by("reason").len().sort("reason").rows(),
        "written": [str(p) for p in paths],
    }


ProgressBar = Callable[[str, int | None], AbstractContextManager[Callable[[int], None]]]


def _progress_bar() -> ProgressBar:
    """The progress display, imported only for a terminal (rich takes ~30 ms to import)."""
    if sys.stderr.isatty():
        from tickforge.platform.progress import progress_bar

        return progress_bar

    def silent(description: str, total: int | None) -> AbstractContextManager[Callable[[int], None]]:
        return nullcontext(lambda done: None)

    return silent


@bars_app.command("validate")
def validate(
    trades: Annotated[Path, typer.Option(help="The raw trades the bars were built from.")],
    bars: Annotated[str, typer.Option(help="A folder of bars_<tf>.parquet, or 'postgres' for the golden tables.")],
    timeframes: Annotated[str, typer.Option(help="Timeframes to check.")] = "1s,1m,3m,5m,15m",
    lateness_ms: Annotated[int, typer.Option()] = 500,
    quotes: Annotated[Path | None, typer.Option(help="Quotes, to check spread_bps/imbalance of 1 s bars.")] = None,
) -> None:
    """Compare bars against an independent pandas recompute over the raw ticks."""
    report = validate_bar_source(trades, bars, timeframes, lateness_ms, quotes)
    typer.echo(json.dumps(report, indent=2, default=str))
    if not report["ok"]:
        raise typer.Exit(1)


def validate_bar_source(
    trades: Path, bars: str, timeframes: str, lateness_ms: int = 500, quotes: Path | None = None
) -> dict[str, Any]:
    """:func:`tickforge.platform.bars.validate.validate_bars` over files: the trades (and quotes)
    read from their files, the bars from a folder of ``bars_<tf>.parquet`` or, for
    ``"postgres"``, the golden tables."""
    from tickforge.platform.bars.validate import BarSource, validate_bars
    from tickforge.platform.io.bar_files import read_bars
    from tickforge.platform.io.files import read_quotes, read_trades
    from tickforge.platform.io.postgres import golden_bar_source
    from tickforge.platform.settings import load_settings

    def from_folder(timeframe: str, symbols: list[str], start_ms: int, end_ms: int) -> pl.DataFrame:
        return read_bars(bars, timeframe)

    source: BarSource = golden_bar_source(load_settings()) if bars == "postgres" else from_folder
    quote_rows = read_quotes(quotes).data if quotes else None
    return validate_bars(read_trades(trades).data, source, timeframes, lateness_ms, quote_rows, source=bars)
