"""``tickforge backtest``: offline backtests and parameter sweeps over bar files."""

from __future__ import annotations

import typer

backtest_app = typer.Typer(help="Backtests and parameter sweeps over bar files.", no_args_is_help=True)


@backtest_app.callback()
def _group() -> None:
    """Backtests and parameter sweeps over bar files."""
