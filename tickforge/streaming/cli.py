"""``tickforge stream``: replay files to Kafka and run the workers."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

stream_app = typer.Typer(help="Replay ticks to Kafka and run the streaming workers.", no_args_is_help=True)

InstanceOpt = Annotated[str, typer.Option(help="Stable id of this worker instance (its transactional id).")]
IdleExitOpt = Annotated[float | None, typer.Option(help="Exit after this many seconds without input (batch use).")]


def _settings():
    from tickforge.platform.settings import load_settings

    return load_settings()


def _summary(name: str) -> str:
    from tickforge.streaming.registry import worker

    return worker(name).summary[:1].upper() + worker(name).summary[1:] + "."


def _setup(settings) -> None:
    from tickforge.platform.logs import configure_logging
    from tickforge.streaming import metrics

    configure_logging()
    metrics.serve(settings.streaming.metrics_port, settings.streaming.metrics_host)


@stream_app.command("replay")
def replay_cmd(
    trades: Annotated[Path, typer.Option(help="Trades file (CSV, .csv.gz or Parquet).")],
    quotes: Annotated[Path | None, typer.Option(help="Quotes file, merged in event-time order.")] = None,
    speed: Annotated[float | None, typer.Option(help="Event-time speed-up (1 = real time).")] = None,
    max_speed: Annotated[
        bool, typer.Option("--max", help="As fast as possible (the default without --speed).")
    ] = False,
    encoding: Annotated[
        str, typer.Option(help="batch (column batches) or json (one edge message per tick).")
    ] = "batch",
    rate: Annotated[float | None, typer.Option(help="Cap the pace at this many ticks per second.")] = None,
    end_marker: Annotated[bool, typer.Option(help="Send the end-of-day watermark when done.")] = True,
) -> None:
    """Publish ticks to the tick topic keyed by symbol."""
    from tickforge.platform.io.files import read_quotes, read_trades
    from tickforge.platform.progress import progress_bar
    from tickforge.streaming.replay import replay

    if encoding not in ("batch", "json"):
        raise typer.BadParameter("encoding is batch or json")
    settings = _settings()
    trade_file = read_trades(trades)
    quote_file = read_quotes(quotes) if quotes else None
    total = trade_file.data.height + (quote_file.data.height if quote_file else 0)
    with progress_bar("replaying", total) as update:
        stats = replay(
            settings,
            trade_file,
            quote_file,
            None if max_speed else speed,
            encoding,
            end_marker=end_marker,
            progress=update,
            rate=rate,
        )
    typer.echo(json.dumps({**stats.__dict__, "ticks_per_s": round(stats.ticks_per_s)}))


@stream_app.command("http-source")
def http_source_cmd(
    port: Annotated[int | None, typer.Option(help="Port (default: settings.http_source.port, 8090).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1; off loopback a token and TLS are required).")
    ] = None,
) -> None:
    """Accept pushed NDJSON ticks on POST /ticks and publish them to the tick topic."""
    from tickforge.streaming.http_source import run, serve

    settings = _settings()
    _setup(settings)
    try:
        server = serve(settings, host, port)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    config = server.config
    scheme = "https" if config.ssl_certfile else "http"
    typer.echo(f"POST NDJSON ticks to {scheme}://{config.host}:{config.port}/ticks", err=True)
    run(server)


@stream_app.command("push")
def push_cmd(
    trades: Annotated[Path, typer.Option(help="Trades file to replay as NDJSON.")],
    url: Annotated[str, typer.Option(help="The NDJSON endpoint.")] = "http://127.0.0.1:8090/ticks",
    speed: Annotated[float | None, typer.Option(help="Event-time speed-up; none: as fast as possible.")] = None,
) -> None:
    """Replay a trades file into an HTTP NDJSON tick source (bearer token from settings.http_source.token)."""
    from tickforge.platform.io.files import read_trades
    from tickforge.streaming.http_source import push_file

    token = _settings().http_source.token
    typer.echo(
        json.dumps(push_file(url, read_trades(trades), speed, token=token.get_secret_value() if token else None))
    )


def _run_worker(name: str, exit_when_idle: float | None, *options: object) -> None:
    """Build the registry entry ``name`` from its factory (settings, then ``options``) and run it."""
    import importlib

    from tickforge.streaming.registry import worker

    spec = worker(name)
    if spec.factory is None:
        raise typer.BadParameter(f"{name} has no factory in the worker registry")
    module, _, attr = spec.factory.partition(":")
    build = getattr(importlib.import_module(module), attr)
    settings = _settings()
    _setup(settings)
    build(settings, *options).run(exit_when_idle)


@stream_app.command("bar-worker", help=_summary("bar-worker"))
def bar_worker_cmd(
    instance_id: InstanceOpt = "0",
    emit_bins: Annotated[bool, typer.Option(help="Publish 10 ms bins as well as 1 s bars.")] = True,
    exit_when_idle: IdleExitOpt = None,
) -> None:
    _run_worker("bar-worker", exit_when_idle, instance_id, emit_bins)


@stream_app.command("bar-store", help=_summary("bar-store"))
def bar_store_cmd(exit_when_idle: IdleExitOpt = None) -> None:
    _run_worker("bar-store", exit_when_idle)


@stream_app.command("oms-store", help=_summary("oms-store"))
def oms_store_cmd(exit_when_idle: IdleExitOpt = None) -> None:
    _run_worker("oms-store", exit_when_idle)


@stream_app.command("raw-sink", help=_summary("raw-sink"))
def raw_sink_cmd(
    exit_when_idle: IdleExitOpt = None,
    flush_rows: Annotated[int, typer.Option(help="Write the buffered ticks after this many rows.")] = 500_000,
    flush_interval_s: Annotated[float, typer.Option(help="... or after this many seconds.")] = 30.0,
) -> None:
    from tickforge.streaming.raw_sink import run_raw_sink

    run_raw_sink(exit_when_idle, flush_rows, flush_interval_s)


@stream_app.command("strategy-runner", help=_summary("strategy-runner"))
def strategy_runner_cmd(
    instance_id: InstanceOpt = "0",
    picks: Annotated[
        str,
        typer.Option(help="Picks file (CSV, Parquet, YAML), or 'postgres': each day's next_day_picks rows."),
    ] = "postgres",
    limits: Annotated[Path | None, typer.Option(help="Risk limits YAML (sizing); default: the packaged one.")] = None,
    latency_ms: Annotated[int, typer.Option(help="From an order's decision to its arrival at the venue.")] = 5,
    exit_when_idle: IdleExitOpt = None,
) -> None:
    from tickforge.streaming.strategy_runner import POSTGRES
    from tickforge.trading.io import load_limits, read_picks_file

    try:  # refused here, as a usage error, rather than as the worker's crash
        if picks != POSTGRES:
            read_picks_file(picks)
        load_limits(limits)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _run_worker("strategy-runner", exit_when_idle, instance_id, picks, limits, latency_ms)


@stream_app.command("risk", help=_summary("risk"))
def risk_cmd(
    instance_id: InstanceOpt = "0",
    limits: Annotated[
        Path | None,
        typer.Option(
            help="Risk limits YAML, re-read on change (a bad edit keeps the last good limits); default: the packaged one."
        ),
    ] = None,
    account: Annotated[str, typer.Option(help="The account whose trading.control commands apply.")] = "paper",
    exit_when_idle: IdleExitOpt = None,
) -> None:
    from tickforge.trading.io import load_limits

    try:  # a file that does not load is a usage error, not the worker's crash
        load_limits(limits)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _run_worker("risk", exit_when_idle, instance_id, str(limits) if limits else None, account)


def _instance_worker_command(name: str) -> None:
    """``stream <name> [--instance-id] [--exit-when-idle]``: a worker built from (settings, instance id)."""

    def command(instance_id: InstanceOpt = "0", exit_when_idle: IdleExitOpt = None) -> None:
        _run_worker(name, exit_when_idle, instance_id)

    stream_app.command(name, help=_summary(name))(command)


def _registry_commands() -> None:
    """Every other ``stream`` worker of the registry (timeframe, signal, pair, ...) gets the common
    command, so a new worker is its registry entry plus its module."""
    from tickforge.streaming.registry import WORKERS

    defined = {info.name for info in stream_app.registered_commands}
    for spec in WORKERS:
        if spec.factory and spec.command == ("stream", spec.name) and spec.name not in defined:
            _instance_worker_command(spec.name)


_registry_commands()


@stream_app.command("start")
def start_cmd(
    only: Annotated[list[str] | None, typer.Option(help="Start only these workers (repeatable).")] = None,
) -> None:
    """Start the workers under a supervisor that restarts the dead and the unhealthy (logs in <state>/logs)."""
    from tickforge.streaming import supervisor

    try:
        typer.echo(json.dumps(supervisor.start(only or None)))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@stream_app.command("stop")
def stop_cmd() -> None:
    """Stop the supervisor and the workers started by `stream start` (or the demo)."""
    from tickforge.streaming import supervisor

    typer.echo(json.dumps({"stopped": supervisor.stop()}))


@stream_app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document (the default output too).")] = False,
) -> None:
    """The supervisor and each worker: running, restarts, last exit, health, liveness age."""
    from tickforge.streaming import supervisor

    typer.echo(json.dumps(supervisor.status(), indent=None if as_json else 2))


@stream_app.command("health")
def health_cmd() -> None:
    """Exit 0 when this deployment's worker loop ran within streaming.liveness_timeout_s (its
    metrics on streaming.metrics_port): a container health check."""
    from tickforge.streaming.supervisor import liveness_ok

    streaming = _settings().streaming
    ok, why = liveness_ok(streaming.metrics_port, streaming.liveness_timeout_s)
    typer.echo(why)
    raise typer.Exit(0 if ok else 1)


@stream_app.command("supervise", hidden=True)
def supervise_cmd(workers: Annotated[str, typer.Option(help="Comma-separated worker names.")]) -> None:
    """The supervisor process that `stream start` runs."""
    from tickforge.platform.logs import configure_logging
    from tickforge.streaming import supervisor

    configure_logging()
    supervisor.supervise([w for w in workers.split(",") if w])


logging.getLogger("confluent_kafka").setLevel(logging.WARNING)
