"""Snowflake load helpers shared by the loaders: the DDL, row chunks, and a slice replaced in one
transaction (DELETE the slice, INSERT its rows).

:func:`replace_slice` serves the loaders that own whole slices of a table (``RAW.TICKS`` per
trade date, the dead letters per UTC day, the research results per pick day). Rows travel as one JSON array per chunk, unnested by FLATTEN: one bound
literal instead of a bind per value (``executemany`` took minutes for 170 k rows locally, and
``write_pandas`` does not work against the local stand-in). DELETE + INSERT rather than MERGE:
fakesnow emulates MERGE in a second DuckDB catalog, which fails inside an explicit transaction
(see :mod:`tickforge.defs.snowflake.warehouse`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

DDL_DIR = Path(__file__).resolve().parents[3] / "snowflake" / "ddl"
JSON_CHUNK = 50_000


def ddl_statements(database: str | None, ddl_dir: Path = DDL_DIR) -> list[str]:
    """Every statement of ``ddl_dir/*.sql`` in file order, ``{database}`` filled in."""
    if database is None:
        raise ValueError("no Snowflake database configured: the DDL needs one to create its tables in")
    if not database.replace("_", "").isalnum():
        raise ValueError(f"{database!r} is not a plain Snowflake identifier")
    statements = []
    for path in sorted(ddl_dir.glob("*.sql")):
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
        statements += [s.strip() for s in text.format(database=database).split(";") if s.strip()]
    return statements


def chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def replace_slice(
    cur: Any, table: str, where: str, columns: Sequence[str], types: Sequence[str], rows: list[Any]
) -> int:
    """Delete the rows of ``table`` matching ``where`` and insert ``rows`` (values in ``columns``
    order, cast to ``types``) with one LOADED_AT, in one transaction. Returns the rows deleted."""
    cols = ", ".join(columns)
    values = ", ".join(f"value[{i}]::{t}" for i, t in enumerate(types))
    # One value for the whole load (a column default would differ per statement).
    loaded_at = cur.execute("SELECT CURRENT_TIMESTAMP()::TIMESTAMP_NTZ").fetchone()[0]
    cur.execute("BEGIN")
    try:
        cur.execute(f"DELETE FROM {table} WHERE {where}")
        deleted = max(cur.rowcount or 0, 0)
        for chunk in chunks(rows, JSON_CHUNK):
            cur.execute(
                f"INSERT INTO {table} ({cols}, LOADED_AT) SELECT {values}, %s::TIMESTAMP_NTZ "
                "FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%s)))",
                (loaded_at, json.dumps(chunk)),
            )
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return deleted
