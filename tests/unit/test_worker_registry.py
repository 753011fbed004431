"""The worker registry is what the CLI, the supervisor and `tickforge up` run: every entry's command
exists with the options the supervisor passes, and every factory is importable."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import typer

from tickforge.cli import app
from tickforge.streaming import registry


def _command(path: tuple[str, ...]) -> Any:
    command = typer.main.get_command(app)
    for part in path:
        assert hasattr(command, "get_command"), f"{part} is under a command, not a group"
        with command.context_class(command) as ctx:
            found = command.get_command(ctx, part)
        assert found is not None, f"`tickforge {' '.join(path)}` does not exist"
        command = found
    return command


@pytest.mark.parametrize("spec", registry.WORKERS, ids=lambda spec: spec.name)
def test_each_entry_runs_a_real_command_with_the_options_the_supervisor_passes(spec):
    options = {opt for param in _command(spec.command).params for opt in getattr(param, "opts", [])}
    if spec.http_port is not None:
        assert "--port" in options
    if spec.factory is not None:
        module, _, attr = spec.factory.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
    if spec.consumes and spec.factory is not None:
        assert "--exit-when-idle" in options


def test_names_are_unique_and_lookups_name_the_known_ones():
    names = registry.names(default_only=False)
    assert len(names) == len(set(names))
    assert "dagster" in names and "dagster" not in registry.names()  # `up` runs it, `stream start` does not
    assert {spec.name for spec in registry.consuming()} <= set(names)
    with pytest.raises(ValueError, match="known: .*bar-worker"):
        registry.worker("no-such-worker")
