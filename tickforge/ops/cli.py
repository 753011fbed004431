"""``tickforge up | down | status | logs | doctor``: commands on the whole platform of one state
folder (``TICKFORGE_STATE_DIR``, default ``.tickforge``). Modules load inside each command, so
``tickforge --help`` stays fast."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer


def _state_dir() -> Path:
    from tickforge.platform.settings import state_dir_from_env

    return state_dir_from_env().resolve()


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def up_cmd(
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once healthy (stop with `tickforge down`).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be healthy.")] = 300.0,
    prometheus: Annotated[bool, typer.Option(help="Start Prometheus with the stack.")] = True,
) -> None:
    """Start the whole platform: the local stack (with Prometheus), the topics, every worker, the live view and
    dagster dev under the supervisor; wait until healthy and print the URLs. Ctrl+C stops it all."""
    from tickforge.ops import lifecycle
    from tickforge.platform.stack.base import StackError

    state_dir = _state_dir()
    started = time.monotonic()

    def say(line: str) -> None:
        typer.echo(f"[{time.monotonic() - started:6.1f}s] {line}", err=True)

    # A SIGTERM while starting (up to `timeout` s) unwinds like Ctrl+C: what started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        urls = lifecycle.up(state_dir, with_prometheus=prometheus, timeout=timeout, progress=say)
    except (lifecycle.PlatformError, StackError, ValueError, RuntimeError) as exc:
        raise _fail(f"{exc}\n(`tickforge down` stops what did start)") from None
    except KeyboardInterrupt:
        _ignore_stop_signals()  # a second signal must not cut the stopping short
        typer.echo("interrupted: stopping what started", err=True)
        _print_down(lifecycle.down(state_dir))
        raise typer.Exit(130) from None
    for name, url in urls.items():
        typer.echo(f"{name:<12} {url}")
    typer.echo(f"logs in {state_dir / 'logs'}; `tickforge status`, `tickforge doctor`", err=True)
    if detach:
        return
    typer.echo("running; Ctrl+C stops everything", err=True)
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    from tickforge.streaming import supervisor

    while not stopping and supervisor.status(state_dir)["supervisor"]["running"]:
        time.sleep(0.5)
    if not stopping:
        typer.echo("the supervisor exited: stopping the rest", err=True)
    _ignore_stop_signals()
    _print_down(lifecycle.down(state_dir))


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _print_down(result: dict[str, Any]) -> None:
    typer.echo(f"stopped workers: {', '.join(result['workers']) or 'none running'}")
    for name, seconds in result["stack"].items():
        typer.echo(f"stopped {name} in {seconds:.1f} s")
    if result["stack_left_running"]:
        typer.echo("stack services `tickforge up` did not start: left running (`tickforge stack down` stops them)")
    if result["wiped"]:
        typer.echo("data wiped")


def down_cmd(
    wipe: Annotated[bool, typer.Option(help="Also delete the data (Kafka, PostgreSQL, S3, Snowflake, logs).")] = False,
) -> None:
    """Stop everything `tickforge up` started; the data stays unless --wipe."""
    from tickforge.ops import lifecycle

    _print_down(lifecycle.down(_state_dir(), wipe=wipe))


def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list, for scripts.")] = False,
) -> None:
    """One table: service, pid, uptime, restarts, consumer lag, last error."""
    from tickforge.ops import lifecycle

    rows = lifecycle.status(_state_dir())
    typer.echo(json.dumps(lifecycle.status_rows_json(rows)) if as_json else lifecycle.format_status(rows))


def logs_cmd(
    service: Annotated[str, typer.Argument(help="A stack service, `supervisor`, or a worker/service of the registry.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing what is appended.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many of the last lines to print first.")] = 50,
) -> None:
    """Print a service's log (<state>/logs/SERVICE.log)."""
    from tickforge.ops import lifecycle

    try:
        path = lifecycle.log_file(_state_dir(), service)
        for text in lifecycle.read_log(path, lines, follow):
            sys.stdout.write(text)
            sys.stdout.flush()
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


def doctor_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: ok and every check.")] = False,
    max_lag: Annotated[int, typer.Option(help="Messages a consumer group may be behind.")] = 10_000,
    dead_letter_minutes: Annotated[float, typer.Option(help="The window the dead-letter rate is read over.")] = 5.0,
    dagster_url: Annotated[
        str | None,
        typer.Option(help="Dagster's webserver (default: the one `up` runs, else TICKFORGE_DAGSTER_URL, else :3000)."),
    ] = None,
) -> None:
    """Check the platform: settings and secrets, endpoints, topics, lag, dead letters, golden watermarks, the raw
    sink, Dagster's last nightly run, disk. Exit 1 when any check fails."""
    from tickforge.ops import doctor

    checks = doctor.run_checks(
        doctor.Options(_state_dir(), max_lag=max_lag, dead_letter_minutes=dead_letter_minutes, dagster_url=dagster_url)
    )
    typer.echo(json.dumps(doctor.as_json(checks), indent=2) if as_json else doctor.format_checks(checks))
    raise typer.Exit(1 if any(c.failed for c in checks) else 0)


def dagster_dev_cmd(
    port: Annotated[int, typer.Option(help="The webserver's port on --host.")] = 3000,
    host: Annotated[str, typer.Option(help="Address to bind (local by default).")] = "127.0.0.1",
) -> None:
    """dagster dev (webserver and daemon) with DAGSTER_HOME in <state>/dagster: what `tickforge up` supervises."""
    import os

    from tickforge.ops.lifecycle import dagster_dev_argv, dagster_home

    argv = dagster_dev_argv(host, port)
    home = dagster_home(_state_dir())
    os.environ["DAGSTER_HOME"] = str(home)
    os.chdir(home)  # not the repository: dagster warns about the dagster.yaml it finds there
    typer.echo(f"tickforge dagster: http://{host}:{port}", err=True)
    os.execv(argv[0], argv)  # dagster dev takes this process (signals reach it directly)


def register(app: typer.Typer) -> None:
    """Add the platform commands to the ``tickforge`` command."""
    app.command("up")(up_cmd)
    app.command("down")(down_cmd)
    app.command("status")(status_cmd)
    app.command("logs")(logs_cmd)
    app.command("doctor")(doctor_cmd)
    app.command("dagster-dev", hidden=True)(dagster_dev_cmd)
