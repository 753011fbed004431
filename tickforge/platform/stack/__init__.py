"""Local stack of real services (Kafka, PostgreSQL, S3 via S3Proxy, Snowflake via fakesnow, and
Prometheus when asked for) started as detached processes by the project's own code. See README.md
next to this file."""

import logging

from tickforge.platform.stack.base import StackError
from tickforge.platform.stack.launcher import DEFAULT_PORTS, LocalStack, UpEvent, endpoints_env

# Quiet by default for library use (pytest, other code); the CLI prints its own progress.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["DEFAULT_PORTS", "LocalStack", "StackError", "UpEvent", "endpoints_env"]
