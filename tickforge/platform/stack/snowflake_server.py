"""Entry point of the Snowflake stand-in: fakesnow's HTTP server with databases kept on disk.

``fakesnow -s`` ignores ``-d`` in server mode and keeps everything in memory, so this module sets
fakesnow's shared instance to a file-backed one before serving its app:

    python -m tickforge.platform.stack.snowflake_server --port 8765 --db-path DIR

Each Snowflake database is a DuckDB file ``DIR/<NAME>.db``.
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import fakesnow.instance

# Bound as a module: the package also has a function named ``server`` that type checkers would see
import fakesnow.server as fakesnow_server
import uvicorn

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def attach_existing(instance: fakesnow.instance.FakeSnow, db_path: Path) -> list[str]:
    """Re-attach the databases of earlier runs.

    fakesnow attaches a database file only on CREATE DATABASE or on a login naming it; without
    this a session that logs in without a database would not see them after a restart.
    ``CREATE DATABASE IF NOT EXISTS`` goes through fakesnow's own path (ATTACH plus its
    information-schema views), which reopens an existing file as is.
    """
    names = sorted(p.stem for p in db_path.glob("*.db") if _PLAIN_NAME.match(p.stem))
    conn = instance.connect()
    try:
        for name in names:
            conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {name}")
    finally:
        conn.close()
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db-path", type=Path, required=True)
    args = parser.parse_args(argv)

    # Raised by fakesnow on every Arrow result; it would fill the log.
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    args.db_path.mkdir(parents=True, exist_ok=True)
    instance = fakesnow.instance.FakeSnow(db_path=args.db_path)
    attach_existing(instance, args.db_path)
    fakesnow_server.shared_fs = instance
    # No access log: one line per HTTP call of the connector (login, query, heartbeat).
    uvicorn.run(fakesnow_server.app, host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
