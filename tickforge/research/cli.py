"""``tickforge backtest``: offline backtests and parameter sweeps over bar files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # the kernels load lazily so --help stays fast
    import polars as pl

    from tickforge.research.bars import BarSeries
    from tickforge.research.engine import Costs

backtest_app = typer.Typer(help="Backtests and parameter sweeps over bar files.", no_args_is_help=True)

BarsOption = Annotated[
    Path, typer.Option("--bars", help="Bar file: the platform's bars_<tf>.parquet or the daily-bar CSV(.gz).")
]
OutOption = Annotated[Path, typer.Option("--out", file_okay=False, help="Output folder.")]
RawOption = Annotated[bool, typer.Option("--raw", help="Daily CSV: raw prices instead of price x adj_factor.")]
FeeOption = Annotated[float | None, typer.Option("--fee-bps", help="Fee in bps of traded notional (registry default).")]
SlipOption = Annotated[
    float | None, typer.Option("--slippage-bps", help="Slippage in bps of the open (registry default).")
]
CashOption = Annotated[float | None, typer.Option("--initial-cash", help="Starting cash of each symbol's book.")]
RegistryOption = Annotated[
    Path | None, typer.Option("--registry", help="Strategy registry YAML (default: the packaged one).")
]


@backtest_app.callback()
def _group() -> None:
    """Backtests and parameter sweeps over bar files."""


def _guarded(work: Callable[[], dict[str, Any]]) -> None:
    """Bad input ends as one line on stderr and exit code 2, never a traceback."""
    from tickforge.research.bars import BarsError
    from tickforge.research.registry import RegistryError

    try:
        summary = work()
    except (BarsError, RegistryError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2, default=str))


def _costs(registry_path: Path | None, fee: float | None, slip: float | None, cash: float | None) -> Costs:
    from tickforge.research.engine import Costs
    from tickforge.research.io import load_registry

    base = load_registry(registry_path).costs
    return Costs(
        base.fee_bps if fee is None else fee,
        base.slippage_bps if slip is None else slip,
        base.initial_cash if cash is None else cash,
    )


def _read(bars: Path, raw: bool, out: Path) -> tuple[list[BarSeries], pl.DataFrame]:
    from tickforge.research.io import read_bars, write_parquet

    series, dead = read_bars(bars, raw)
    if not series:
        raise ValueError(f"{bars}: no usable bars ({dead.height} dead-lettered)")
    if dead.height:
        write_parquet(dead, out / "dead_letter.parquet")
    return series, dead


@backtest_app.command("run")
def run(
    bars: BarsOption,
    strategy: Annotated[str, typer.Option("--strategy", help="Strategy name.")],
    out: OutOption,
    param: Annotated[list[str] | None, typer.Option("--param", help="name=value, repeatable.")] = None,
    fee_bps: FeeOption = None,
    slippage_bps: SlipOption = None,
    initial_cash: CashOption = None,
    raw: RawOption = False,
    registry: RegistryOption = None,
) -> None:
    """Backtest one parameter set on every symbol: OUT/trades.parquet, equity.parquet, metrics.parquet."""

    def work() -> dict[str, Any]:
        import polars as pl

        from tickforge.research.engine import backtest
        from tickforge.research.grid import parse_grid_options
        from tickforge.research.io import write_parquet
        from tickforge.research.strategies import get_strategy

        strat = get_strategy(strategy)
        params = strat.validate(parse_grid_options(param or []))
        costs = _costs(registry, fee_bps, slippage_bps, initial_cash)
        series, dead = _read(bars, raw, out)
        results = [backtest(s, strat, params, costs) for s in series]
        paths = [
            write_parquet(pl.concat([r.trades for r in results]), out / "trades.parquet"),
            write_parquet(pl.concat([r.equity for r in results]), out / "equity.parquet"),
            write_parquet(pl.DataFrame([r.metrics for r in results]), out / "metrics.parquet"),
        ]
        return {
            "strategy": strat.name,
            "params": params,
            "symbols": len(series),
            "dead_letters": dead.height,
            "trades": sum(r.trades.height for r in results),
            "written": [str(p) for p in paths],
        }

    _guarded(work)


@backtest_app.command("sweep")
def sweep_command(
    bars: BarsOption,
    out: OutOption,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="Strategy name (else every registry strategy).")
    ] = None,
    grid: Annotated[
        list[str] | None, typer.Option("--grid", help="name=start:stop:step (inclusive) or name=a,b,c; repeatable.")
    ] = None,
    constraint: Annotated[
        list[str] | None, typer.Option("--constraint", help="e.g. 'fast < slow' (the registry's apply too).")
    ] = None,
    train: Annotated[
        str | None, typer.Option("--train", help="Walk-forward in-sample span (e.g. 3y); with --test.")
    ] = None,
    test: Annotated[
        str | None, typer.Option("--test", help="Walk-forward out-of-sample span and roll (e.g. 1y).")
    ] = None,
    fee_bps: FeeOption = None,
    slippage_bps: SlipOption = None,
    initial_cash: CashOption = None,
    raw: RawOption = False,
    registry: RegistryOption = None,
) -> None:
    """Every grid point on every symbol (and walk-forward window): OUT/results.parquet."""

    def work() -> dict[str, Any]:
        import polars as pl

        from tickforge.platform.progress import progress_bar
        from tickforge.research.engine import FULL, sweep
        from tickforge.research.grid import expand_grid, parse_grid_options
        from tickforge.research.io import load_registry, write_parquet
        from tickforge.research.strategies import get_strategy
        from tickforge.research.walkforward import walk_forward_windows

        reg = load_registry(registry)
        costs = _costs(registry, fee_bps, slippage_bps, initial_cash)
        if (train is None) != (test is None):
            raise ValueError("walk-forward needs both --train and --test")
        series, dead = _read(bars, raw, out)
        timeframe = series[0].timeframe
        plans: list[tuple[str, list[dict[str, Any]]]] = []
        if strategy is not None:
            strat = get_strategy(strategy)
            entry = reg.strategies.get(strat.name)
            constraints = [*(entry.constraints if entry else []), *(constraint or [])]
            if grid:
                points = expand_grid(strat, parse_grid_options(grid), constraints, entry.fixed if entry else None)
            else:
                points = reg.grid(strat.name, timeframe) if entry else []
            if not points:
                raise ValueError(f"{strat.name}: no grid for {timeframe} bars (pass --grid)")
            plans.append((strat.name, points))
        else:
            if grid:
                raise ValueError("--grid needs --strategy")
            plans = [(name, reg.grid(name, timeframe)) for name in reg.strategies]
            plans = [(n, g) for n, g in plans if g and not (get_strategy(n).intraday_only and timeframe == "1d")]
        # --train alone takes the registry's out-of-sample span; a single strategy without
        # --train is swept over the whole series.
        spans: tuple[str, str] | None = None
        if train is not None:
            spans = (train, test or reg.walk_forward.test)
        elif strategy is None:
            spans = (reg.walk_forward.train, reg.walk_forward.test)
        windows = [FULL]
        if spans is not None:
            first = min(int(s.window_start[0]) for s in series)
            last = max(int(s.window_start[-1]) for s in series)
            windows = walk_forward_windows(first, last, *spans)
            if not windows:
                raise ValueError(f"the bars are shorter than the in-sample span {spans[0]}")
        frames = []
        total = len(series) * len(plans)
        with progress_bar("sweeping", total) as update:
            for k, (name, points) in enumerate(plans):
                frames.append(sweep(series, name, points, costs, windows, progress=_shifted(update, k * len(series))))
        results = pl.concat(frames)
        path = write_parquet(results, out / "results.parquet")
        return {
            "strategies": {n: len(p) for n, p in plans},
            "symbols": len(series),
            "windows": len(windows),
            "rows": results.height,
            "dead_letters": dead.height,
            "written": str(path),
        }

    _guarded(work)


def _shifted(update: Callable[[int], None], base: int) -> Callable[[int], None]:
    """A progress callback counting from ``base`` (one sweep among several)."""
    return lambda done: update(base + done)
