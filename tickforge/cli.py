"""The ``tickforge`` command. Sub-commands import their modules lazily so ``--help`` is fast."""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from tickforge.ops.cli import register as register_platform_commands
from tickforge.platform.commands.topics import plan as topics_plan

if TYPE_CHECKING:
    # typer 0.29 vendors click: its group's methods take the vendored Context, not click's
    from typer import _click as click


class _Groups(TyperGroup):
    """Imports the stack group's module only when it is asked for: its service clients (boto3,
    psycopg, ...) took ~0.3 s of the start of every other command, e.g. ``tickforge bars build``."""

    lazy = {
        "stack": ("tickforge.platform.stack.cli", "stack_app"),
        "paper": ("tickforge.trading.cli", "paper_app"),
        "risk": ("tickforge.trading.cli", "risk_app"),
        # and not building the other groups' commands saves ~40 ms of every command's start
        "bars": ("tickforge.platform.commands.bars", "bars_app"),
        "stream": ("tickforge.streaming.cli", "stream_app"),
        "signals": ("tickforge.platform.signals.cli", "signals_app"),
        "backtest": ("tickforge.research.cli", "backtest_app"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(name for name in super().list_commands(ctx) if name not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> Any:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name]
            group = typer.main.get_command(getattr(importlib.import_module(module), attr))
            group.name = cmd_name
            self.commands[cmd_name] = group
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    help="Tickforge: live bars and signals from Kafka ticks, with the batch side on Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Groups,
)
register_platform_commands(app)  # up, down, status, logs, doctor

topics_app = typer.Typer(help="The Kafka topic registry.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
topics_app.command("plan")(topics_plan)


@topics_app.command("apply")
def topics_apply() -> None:
    """Create missing topics, grow partitions and set configs (idempotent)."""
    from tickforge.platform.io.kafka import apply_topics
    from tickforge.platform.settings import load_settings

    for name, action in apply_topics(load_settings()).items():
        typer.echo(f"{name}: {action}")


@topics_app.command("list")
def topics_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The registry: name, key, retention, cleanup policy."""
    from tickforge.platform.io.kafka import topic_name
    from tickforge.platform.settings import load_settings
    from tickforge.platform.topics import registry

    settings = load_settings()
    rows = [
        {
            "name": topic_name(settings, s.name),
            "key": s.key,
            "partitions": s.partitions or settings.kafka.partitions,
            "retention_ms": s.retention_ms,
            "cleanup_policy": s.cleanup_policy,
            "description": s.description,
        }
        for s in registry(settings.streaming.timeframes)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['name']:<28} key={r['key']:<7} partitions={r['partitions']} {r['description']}")


@app.command("config")
def config() -> None:
    """The effective settings, secrets masked."""
    from tickforge.platform.settings import load_settings

    typer.echo(json.dumps(load_settings().redacted(), indent=2))


@app.command("demo")
def demo(
    keep_running: Annotated[bool, typer.Option(help="Leave the workers and dagster dev running.")] = True,
) -> None:
    """Run the platform on one real trading day on the local stack and print where to look."""
    from tickforge.demo import run_demo

    summary = run_demo(keep_running)
    typer.echo(json.dumps(summary, indent=2, default=str))
    if summary["urls"]:
        typer.echo("\n".join(f"{name}: {url}" for name, url in summary["urls"].items()))
        typer.echo(
            "stop everything with: TICKFORGE_STATE_DIR=.tickforge/demo-stack tickforge stream stop && "
            "TICKFORGE_STATE_DIR=.tickforge/demo-stack tickforge stack down"
        )


@app.command("dashboard")
def dashboard(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind (local by default).")] = "127.0.0.1",
) -> None:
    """Serve the Streamlit live view (bars, signals, pair watch, pipeline health)."""
    import os
    import sys
    from pathlib import Path

    app_path = Path(__file__).resolve().parent / "dashboard" / "app.py"
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    typer.echo(f"tickforge dashboard: http://{host}:{port}", err=True)
    os.execv(sys.executable, argv)  # the server takes this process (signals reach it directly)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
