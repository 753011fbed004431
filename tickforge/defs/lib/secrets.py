"""Secrets handed to Dagster resources by name when they came from the environment."""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar


def secret(value: str | None, env_name: str, env_secrets: bool = True) -> Any:
    """``EnvVar(env_name)`` when that variable holds exactly ``value``, else the value: Dagster
    then shows the variable's name, not the secret, in the UI and in run snapshots."""
    if env_secrets and value is not None and os.environ.get(env_name) == value:
        return EnvVar(env_name)
    return value
