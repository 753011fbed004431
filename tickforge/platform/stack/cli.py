"""``tickforge stack up | down | status``: the local stack from the command line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from tickforge.platform.settings import redact_dsn
from tickforge.platform.stack.base import StackError
from tickforge.platform.stack.launcher import DEFAULT_PORTS, LocalStack, UpEvent, port_env_var

stack_app = typer.Typer(
    help="Local stack of real services: Kafka, PostgreSQL, S3 (S3Proxy), Snowflake (fakesnow), Prometheus.",
    no_args_is_help=True,
)

SECRET_KEYS = frozenset({"password", "secret_access_key"})


@stack_app.callback()
def _show_warnings() -> None:
    """The library is quiet by default; on the command line its warnings (a service restarted,
    a port request ignored) belong on stderr. Messages carry no secrets."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger("tickforge.platform.stack").addHandler(handler)


def mask(entry: dict[str, Any]) -> dict[str, Any]:
    """A status entry fit for a terminal or a log: secrets as ``***``, DSN passwords hidden."""
    shown = {key: ("***" if key in SECRET_KEYS else value) for key, value in entry.items()}
    if "dsn" in shown:
        shown["dsn"] = redact_dsn(str(shown["dsn"]))
    return shown


def _endpoint_text(entry: dict[str, Any]) -> str:
    details = mask(entry)
    for key in ("running", "pid", "log"):
        details.pop(key, None)
    return "  ".join(f"{key}={value}" for key, value in details.items())


@contextmanager
def _errors_as_exit() -> Iterator[None]:
    try:
        yield
    except (StackError, ValueError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _print_event(event: UpEvent) -> None:
    setup = f" (setup {event.setup_seconds:.1f} s)" if event.setup_seconds >= 0.1 else ""
    typer.echo(
        f"{event.service:<10} {event.action:<9} {event.seconds:6.1f} s{setup}  "
        f"pid {event.entry['pid']}  {_endpoint_text(event.entry)}"
    )


def _port_option(key: str) -> Any:
    return typer.Option(
        f"--{key.replace('_', '-')}-port",
        help=f"Default {DEFAULT_PORTS[key]} (or a free port); env {port_env_var(key)}.",
        show_default=False,
    )


@stack_app.command()
def up(
    only: Annotated[
        str | None, typer.Option(help="Comma-separated subset: kafka,postgres,s3,snowflake,prometheus.")
    ] = None,
    with_prometheus: Annotated[
        bool, typer.Option(help="Also start Prometheus, scraping the workers the supervisor lists.")
    ] = False,
    kafka_port: Annotated[int | None, _port_option("kafka")] = None,
    kafka_controller_port: Annotated[int | None, _port_option("kafka_controller")] = None,
    postgres_port: Annotated[int | None, _port_option("postgres")] = None,
    s3_port: Annotated[int | None, _port_option("s3")] = None,
    snowflake_port: Annotated[int | None, _port_option("snowflake")] = None,
    prometheus_port: Annotated[int | None, _port_option("prometheus")] = None,
) -> None:
    """Start the services (reusing healthy running ones) and write <state>/stack.env."""
    requested = {
        "kafka": kafka_port,
        "kafka_controller": kafka_controller_port,
        "postgres": postgres_port,
        "s3": s3_port,
        "snowflake": snowflake_port,
        "prometheus": prometheus_port,
    }
    services = [s.strip() for s in only.split(",") if s.strip()] if only else None
    with _errors_as_exit():
        stack = LocalStack(ports={k: v for k, v in requested.items() if v is not None}, with_prometheus=with_prometheus)
        stack.up(services, progress=_print_event)
    typer.echo(f"endpoints for Settings: {stack.env_file}")


@stack_app.command()
def down(
    wipe: Annotated[bool, typer.Option(help="Also delete the services' data (the Kafka jar cache stays).")] = False,
) -> None:
    """Stop every service of the stack and remove <state>/stack.env."""
    with _errors_as_exit():
        stack = LocalStack()
        timings = stack.down(wipe=wipe)
    for name, seconds in timings.items():
        typer.echo(f"{name:<10} stopped   {seconds:6.1f} s")
    if not timings:
        typer.echo("nothing was running")
    if wipe:
        typer.echo(f"wiped {stack.state_dir}")


@stack_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, credentials included.")] = False,
) -> None:
    """Show each service: running or not, pid, endpoint."""
    with _errors_as_exit():
        current = LocalStack().status()
    if as_json:
        # Local fake credentials only (fixed for S3Proxy; fakesnow accepts anything), so machine-readable
        # output carries them: scripts need them to connect.
        typer.echo(json.dumps(current))
        return
    typer.echo(f"{'SERVICE':<10} {'STATE':<8} {'PID':>7}  ENDPOINT")
    for name, entry in current.items():
        state = "running" if entry["running"] else "stopped"
        pid = entry["pid"] if entry["pid"] is not None else "-"
        typer.echo(f"{name:<10} {state:<8} {pid!s:>7}  {_endpoint_text(entry)}")
