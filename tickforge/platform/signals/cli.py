"""``tickforge signals``: offline signals over a bars file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tickforge.platform.signals.sessions import SessionTz

SIGNALS_FILE = "signals.parquet"

signals_app = typer.Typer(help="Indicator signals over 1 s bars.", no_args_is_help=True)


@signals_app.callback()
def _group() -> None:
    """Indicator signals over 1 s bars."""  # a callback keeps ``build`` a subcommand


def build_signals(bars_path: Path | str, out_dir: Path | str, session_tz: SessionTz = "UTC") -> Path:
    """Compute the signals of a 1 s bars parquet file into ``out_dir/signals.parquet``."""
    # Imported here so that ``tickforge --help`` does not load polars and scipy.
    import polars as pl

    from tickforge.platform.signals.batch import compute_signals

    signals = compute_signals(pl.read_parquet(bars_path), session_tz)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SIGNALS_FILE
    # Write then rename: a crash never leaves a truncated file under the final name.
    partial = out / f".{SIGNALS_FILE}.partial"
    signals.write_parquet(partial)
    partial.replace(path)
    return path


@signals_app.command("build")
def build(
    bars: Annotated[
        Path, typer.Option("--bars", exists=True, dir_okay=False, help="1 s bars parquet (bars_1s.parquet).")
    ],
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="Output folder for signals.parquet.")],
    session_tz: Annotated[str, typer.Option("--session-tz", help="IANA zone whose calendar day is a session.")] = "UTC",
) -> None:
    """Write the signals of every bar to OUT/signals.parquet."""
    try:
        path = build_signals(bars, out, session_tz)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(path)
