"""``tickforge paper``: the paper trading path offline over recorded tick files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tickforge.trading.picks import Pick

paper_app = typer.Typer(help="Paper trading over recorded days (the workers' kernels, no Kafka).", no_args_is_help=True)


@paper_app.callback()
def _group() -> None:
    """Paper trading over recorded days."""


def bars_for(
    bars_from: str, trade_file: Any, timeframes: list[str], lateness_ms: int, regular: bool = False
) -> dict[str, Any]:
    """Bars per timeframe: built from the trades with the streaming kernel (only the regular
    session's with ``regular``), or read from a folder of ``bars_<tf>.parquet`` files (what
    ``tickforge bars build`` writes)."""
    import dataclasses

    import polars as pl

    from tickforge.platform.bars.offline import build_bars
    from tickforge.trading.sessions import regular_hours

    if bars_from == "trades":
        if regular:
            trade_file = dataclasses.replace(trade_file, data=regular_hours(trade_file.data))
        return build_bars(trade_file, timeframes, lateness_ms=lateness_ms).bars
    if regular:
        raise ValueError("--regular-hours applies to --bars-from trades")
    folder = Path(bars_from)
    if not folder.is_dir():
        raise ValueError(f"--bars-from takes 'trades' or a folder of bars_<tf>.parquet files, got {bars_from!r}")
    out = {}
    for tf in timeframes:
        path = folder / f"bars_{tf}.parquet"
        if not path.is_file():
            raise ValueError(f"{folder}: no bars_{tf}.parquet for the picks on {tf}")
        out[tf] = pl.read_parquet(path)
    return out


@paper_app.command("replay")
def replay_command(
    trades: Annotated[Path, typer.Option("--trades", help="Trades: the platform's tick files (CSV, .gz, Parquet).")],
    quotes: Annotated[Path, typer.Option("--quotes", help="Top-of-book quotes of the same stretch.")],
    picks: Annotated[
        Path,
        typer.Option(
            "--picks", help="Picks: CSV, Parquet or YAML with symbol, strategy, timeframe, params, bucket, weight."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="Output folder.")],
    bars_from: Annotated[
        str,
        typer.Option(
            "--bars-from", help="'trades' (build with the streaming kernel) or a folder of bars_<tf>.parquet."
        ),
    ] = "trades",
    latency_ms: Annotated[int, typer.Option("--latency-ms", min=0, help="Order arrival = decision time + this.")] = 5,
    limits: Annotated[
        Path | None, typer.Option("--limits", help="Risk limits YAML (default: the packaged limits.yaml).")
    ] = None,
    lateness_ms: Annotated[int, typer.Option("--lateness-ms", min=0, help="Bar builder allowed lateness.")] = 500,
    fee_bps: Annotated[
        float | None, typer.Option("--fee-bps", help="Taker fee in bps of notional (default: the research registry's).")
    ] = None,
    regular_hours: Annotated[
        bool,
        typer.Option(
            "--regular-hours",
            help="Bars (so decisions) from the 09:30-16:00 New York trades only; matching sees every quote and print.",
        ),
    ] = False,
    postgres: Annotated[
        bool,
        typer.Option(
            "--postgres",
            help="Also store the OMS (orders, transitions, fills) in the settings' PostgreSQL, idempotently.",
        ),
    ] = False,
    account: Annotated[
        str, typer.Option("--account", help="The OMS account the orders are stored under (with --postgres).")
    ] = "paper-replay",
) -> None:
    """bars -> runner -> risk -> OMS -> matcher -> accounting: OUT/{orders,transitions,fills,positions,pnl,decisions}.parquet."""

    def work() -> dict[str, Any]:
        from tickforge.trading.io import read_picks_file

        return replay_day(
            trades,
            quotes,
            read_picks_file(picks),
            str(picks),
            out,
            bars_from=bars_from,
            latency_ms=latency_ms,
            limits=limits,
            lateness_ms=lateness_ms,
            fee_bps=fee_bps,
            regular_hours=regular_hours,
            postgres=postgres,
            account=account,
        )

    _guarded(work)


def replay_day(
    trades: Path,
    quotes: Path,
    every: Sequence[Pick],
    picks_source: str,
    out: Path,
    *,
    bars_from: str = "trades",
    latency_ms: int = 5,
    limits: Path | None = None,
    lateness_ms: int = 500,
    fee_bps: float | None = None,
    regular_hours: bool = False,
    postgres: bool = False,
    account: str = "paper-replay",
) -> dict[str, Any]:
    """The paper path over a day of tick files for the picks ``every`` (daily ones are not traded):
    the files written, and a summary (orders, fills, PnL, the checks)."""
    import polars as pl

    from tickforge.platform.io.files import read_quotes, read_trades
    from tickforge.platform.settings import Settings
    from tickforge.research.bars import DAILY
    from tickforge.research.io import load_registry
    from tickforge.trading.accounting import FeeSchedule
    from tickforge.trading.audit import identity_violations, taker_fill_violations
    from tickforge.trading.io import load_limits, write_replay
    from tickforge.trading.parity import decision_parity
    from tickforge.trading.replay import replay
    from tickforge.trading.sessions import SessionRule

    risk_limits = load_limits(limits)  # validated first: no limits, no trading
    # a daily pick decides at the day's close on daily bars: not something a day of ticks trades
    chosen = [p for p in every if p.timeframe != DAILY]
    if not chosen:
        raise ValueError(f"{picks_source}: no intraday picks to trade ({len(every)} daily)")
    for path in (trades, quotes):
        if not path.is_file():
            raise ValueError(f"no file at {path}")
    trade_file, quote_file = read_trades(trades), read_quotes(quotes)
    if trade_file.data.is_empty():
        raise ValueError(f"{trades}: no usable trades ({trade_file.dead_letters.height} dead-lettered)")
    bars = bars_for(bars_from, trade_file, sorted({p.timeframe for p in chosen}), lateness_ms, regular_hours)
    fee = load_registry().costs.fee_bps if fee_bps is None else fee_bps
    sessions = SessionRule.from_settings(Settings().signals)  # the signals' symbol classes and zones
    result = replay(
        bars,
        quote_file.data,
        trade_file.data,
        chosen,
        risk_limits,
        latency_ms,
        FeeSchedule(taker_bps=fee),
        sessions=sessions,
    )
    paths = write_replay(result, out)
    stored = store_replay(result, account) if postgres else None
    parity = decision_parity(result.decisions, bars, chosen)
    last = result.pnl.row(-1, named=True)
    final = result.positions.filter(pl.col("fill_id").is_null() & (pl.col("quantity") != 0))
    return {
        "picks": len(chosen),
        "daily_picks_not_traded": len(every) - len(chosen),
        "picks_without_bars": [f"{p.symbol} {p.book}" for p in parity if p.bars == 0],
        "orders": result.orders.height,
        "fills": result.fills.height,
        "orders_by_status": dict(result.orders.group_by("status").len().sort("status").iter_rows()),
        "rejected_by_rule": result.rejections,
        "illegal_transitions": result.illegal_transitions,
        "pnl": {k: round(last[k], 2) for k in ("realized_pnl", "unrealized_pnl", "fees", "equity")},
        "open_positions_at_end": dict(zip(final["book"], final["quantity"], strict=True)),
        "parity": all(p.passed for p in parity),
        "parity_mismatches": sum(p.mismatches for p in parity),
        "taker_fill_violations": len(taker_fill_violations(result.fills, quote_file.data)),
        "identity_violations": len(identity_violations(result.pnl)),
        "dead_letters": {"trades": trade_file.dead_letters.height, "quotes": quote_file.dead_letters.height},
        "written": [str(p) for p in paths],
        **({"postgres": stored} if stored is not None else {}),
    }


def demo_paper_day(trades: Path, quotes: Path, pick_day: str | None, out: Path) -> dict[str, Any]:
    """The demo's trading step: the picks the research has just chosen (``next_day_picks`` of
    ``pick_day``) traded on paper over the demo day's regular-session ticks, their OMS stored in
    PostgreSQL under the account ``paper-demo``. Never raises: a failure is the summary's ``error``.

    The demo carries one day of intraday history, on which no intraday strategy makes the trades
    the gates ask for, so the picks are usually all daily. Then the day's intraday scores are
    selected again with the evidence gates relaxed (:func:`thin_history_candidates`), among the
    symbols the quote file covers (the venue fills at their NBBO), and those candidates are traded instead, labelled as such in the summary: in-sample, since they were
    scored on the very bars they trade, and never written as picks.
    """
    from datetime import date

    import polars as pl
    import psycopg

    from tickforge.platform.io.files import read_quotes
    from tickforge.platform.settings import load_settings
    from tickforge.research.bars import DAILY
    from tickforge.research.io import load_registry
    from tickforge.research.scoring import thin_history_candidates
    from tickforge.research.store import NEXT_DAY_PICKS, STRATEGY_SCORES, read_table
    from tickforge.trading.picks import parse_picks

    if pick_day is None:
        return {"error": "the research made no picks"}
    settings = load_settings()
    dsn, schema, day = (
        settings.postgres.dsn.get_secret_value(),
        settings.postgres.schema_name,
        date.fromisoformat(pick_day),
    )
    try:
        rows = read_table(dsn, schema, NEXT_DAY_PICKS, '"day" = %s', [day])
        source = f"next_day_picks of {pick_day}"
        traded: dict[str, Any] = {"traded": source}
        if rows.filter(pl.col("timeframe") != DAILY).is_empty():
            scores = read_table(dsn, schema, STRATEGY_SCORES, '"day" = %s AND "timeframe" <> %s', [day, DAILY])
            scoring = load_registry().scoring
            # The paper venue fills at the NBBO: a symbol the quote file does not cover could only
            # be rejected (no reference price), so the candidates come from the quoted symbols.
            quoted = read_quotes(quotes).data["symbol"].unique().to_list()
            quoted_scores = scores.filter(pl.col("symbol").is_in(quoted))
            candidates = thin_history_candidates(quoted_scores, scoring)
            relaxed = "gates relaxed to one trade"
            if candidates.is_empty():
                # Every strategy lost on the quoted symbols that day: the best-scored one is still
                # traded, so that the demo shows the path at work, and says so.
                candidates = thin_history_candidates(quoted_scores, scoring, performance_gates=False)
                relaxed = "gates relaxed to one trade, losers included: every intraday strategy lost on the day"
            if candidates.is_empty():
                return {
                    "error": f"{source}: no intraday picks ({rows.height} daily) and no intraday candidates "
                    f"among the quoted symbols {sorted(quoted)}"
                }
            source = f"intraday candidates of {pick_day} ({relaxed})"
            traded = {
                "traded": source,
                "why": f"the {rows.height} picks of {pick_day} are daily: on the demo's one day of intraday "
                f"history no intraday strategy makes the {scoring.gates.min_trades} trades the gates ask for",
                "in_sample": True,
                "candidates_from": sorted(quoted),
            }
            rows = candidates
        summary = replay_day(
            trades,
            quotes,
            parse_picks(rows.iter_rows(named=True)),
            source,
            out,
            regular_hours=True,
            postgres=True,
            account="paper-demo",
        )
        return {**traded, **summary}
    except (ValueError, OSError, psycopg.Error) as exc:
        return {"error": str(exc)}


def store_replay(result: Any, account: str) -> dict[str, Any]:
    """The replay's OMS in the settings' PostgreSQL (tables created if missing): what was new."""
    import dataclasses

    import psycopg

    from tickforge.platform.settings import load_settings
    from tickforge.trading.oms import ConflictingDuplicate
    from tickforge.trading.store import ensure_oms_tables, store_oms

    settings = load_settings()
    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name
    try:
        ensure_oms_tables(dsn, schema, settings.streaming.timeframes)
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            counts = store_oms(conn, schema, account, result.orders, result.transitions, result.fills)
    except psycopg.Error as exc:
        raise ValueError(f"postgres: {str(exc).strip()}") from None
    except ConflictingDuplicate as exc:  # e.g. the same day replayed with another latency: use another --account
        raise ValueError(f"postgres: {exc}") from None
    return {"account": account, "schema": schema, **dataclasses.asdict(counts)}


def _guarded(work: Any) -> None:
    """Bad input ends as one line on stderr and exit code 2, never a traceback."""
    import polars as pl

    try:
        summary = work()
    except (
        ValueError,
        OSError,
        pl.exceptions.PolarsError,
    ) as exc:  # PicksError, LimitsError, BarsError are ValueErrors
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2, default=str))


risk_app = typer.Typer(
    help="The trading state every risk instance reads (the compacted trading.control topic).", no_args_is_help=True
)


def _set_state(action: str, reason: str, operator: str | None, scope: str) -> None:
    def work() -> dict[str, Any]:
        import getpass
        import time

        from confluent_kafka import KafkaException

        from tickforge.platform.settings import load_settings
        from tickforge.streaming.trading_control import publish_control
        from tickforge.trading.control import ControlCommand

        who = operator or getpass.getuser()
        command = ControlCommand(action, reason, who, int(time.time() * 1000), scope)  # type: ignore[arg-type]
        try:
            partition, offset = publish_control(load_settings(), command)
        except (RuntimeError, KafkaException) as exc:
            raise ValueError(str(exc)) from None
        return {
            "action": action,
            "state": str(command.state),
            "scope": command.scope,
            "operator": command.operator,
            "reason": command.reason,
            "ts_ms": command.ts_ms,
            "partition": partition,
            "offset": offset,
        }

    _guarded(work)


_REASON = typer.Option("--reason", help="Why (kept with the command).")
_OPERATOR = typer.Option("--operator", help="Who (default: the login name).")
_SCOPE = typer.Option("--scope", help="The account it applies to; 'all' for every account.")


@risk_app.command("halt")
def risk_halt(
    reason: Annotated[str, _REASON],
    operator: Annotated[str | None, _OPERATOR] = None,
    scope: Annotated[str, _SCOPE] = "all",
) -> None:
    """HALTED: no order passes."""
    _set_state("halt", reason, operator, scope)


@risk_app.command("reduce")
def risk_reduce(
    reason: Annotated[str, _REASON],
    operator: Annotated[str | None, _OPERATOR] = None,
    scope: Annotated[str, _SCOPE] = "all",
) -> None:
    """REDUCING: only orders that reduce a position pass."""
    _set_state("reduce", reason, operator, scope)


@risk_app.command("resume")
def risk_resume(
    reason: Annotated[str, _REASON],
    operator: Annotated[str | None, _OPERATOR] = None,
    scope: Annotated[str, _SCOPE] = "all",
) -> None:
    """ACTIVE: orders pass the other rules (a limit still breached tightens again at the next mark)."""
    _set_state("resume", reason, operator, scope)


@risk_app.command("status")
def risk_status(
    account: Annotated[str, typer.Option("--account", help="The account whose state is asked.")] = "paper",
) -> None:
    """The command in force for an account (the latest of its scope and of 'all')."""

    def work() -> dict[str, Any]:
        from confluent_kafka import KafkaException

        from tickforge.platform.settings import load_settings
        from tickforge.streaming.trading_control import ControlReader
        from tickforge.trading.limits import TradingState

        try:
            reader = ControlReader(load_settings(), account)
            try:
                reader.catch_up()
            finally:
                reader.close()
        except (RuntimeError, KafkaException) as exc:
            raise ValueError(str(exc)) from None
        command = reader.in_force()
        return {
            "account": account,
            "state": str(command.state if command else TradingState.ACTIVE),
            "refused_messages": reader.refused,
            "command": None
            if command is None
            else {
                "action": str(command.action),
                "reason": command.reason,
                "operator": command.operator,
                "ts_ms": command.ts_ms,
                "scope": command.scope,
            },
        }

    _guarded(work)
