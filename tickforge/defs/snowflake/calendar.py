"""``snowflake_dim_calendar``: ``CORE.DIM_CALENDAR`` covering every loaded day.

The range is from the earliest to the latest day found in the facts (``CORE.DIM_SYMBOL``'s
window span), ``RAW.TICKS`` and the run's partition day. Days already in the table are left
alone; the missing ones are inserted in one transaction (rows bound as one JSON array and
unnested with FLATTEN, as in :mod:`tickforge.defs.snowflake.raw_ticks`), so a rerun inserts nothing.
The asset check verifies every day of the range is present exactly once.
"""

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    asset,
)
from dagster_snowflake import SnowflakeResource

from tickforge.defs.lib.partitions import daily_partitions
from tickforge.defs.lib.snowflake import ddl_statements

DIM_CALENDAR = "CORE.DIM_CALENDAR"
CALENDAR_CHECK = "calendar_covers_loaded_days"


def calendar_row(day: date) -> list[Any]:
    """CALENDAR_DATE, WEEKDAY (ISO), WEEKDAY_NAME, IS_WEEKEND, MONTH, QUARTER, YEAR."""
    weekday = day.isoweekday()
    return [day.isoformat(), weekday, day.strftime("%a"), weekday >= 6, day.month, (day.month - 1) // 3 + 1, day.year]


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _ms_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


def loaded_span(cur: Any, day: date) -> tuple[date, date]:
    """Earliest and latest day in DIM_SYMBOL's span, RAW.TICKS and ``day``."""
    days = [day]
    lo, hi = cur.execute("SELECT MIN(FIRST_WINDOW_START), MAX(LAST_WINDOW_START) FROM CORE.DIM_SYMBOL").fetchone()
    days += [_ms_day(int(v)) for v in (lo, hi) if v is not None]
    lo, hi = cur.execute("SELECT MIN(TRADE_DATE), MAX(TRADE_DATE) FROM RAW.TICKS").fetchone()
    days += [v for v in (lo, hi) if v is not None]
    return min(days), max(days)


def calendar_state(cur: Any, first: date, last: date) -> tuple[int, int]:
    """(distinct days present in [first, last], rows in [first, last])."""
    where = f"WHERE CALENDAR_DATE BETWEEN '{first.isoformat()}' AND '{last.isoformat()}'"
    distinct, rows = cur.execute(
        f"SELECT COUNT(DISTINCT CALENDAR_DATE), COUNT(*) FROM {DIM_CALENDAR} {where}"
    ).fetchone()
    return int(distinct), int(rows)


@asset(
    partitions_def=daily_partitions,
    deps=[AssetKey("snowflake_bar_facts"), AssetKey("snowflake_raw_ticks")],
    kinds={"snowflake", "python"},
    owners=["team:analytics-platform"],
    group_name="warehouse",
    description="CORE.DIM_CALENDAR (date, ISO weekday, is_weekend, month, quarter, year) seeded to "
    "cover every day loaded into the facts and RAW.TICKS; only missing days are inserted.",
    metadata={"table": DIM_CALENDAR},
    check_specs=[
        AssetCheckSpec(
            CALENDAR_CHECK,
            asset="snowflake_dim_calendar",
            description="Every day from the first to the last loaded day is in CORE.DIM_CALENDAR exactly once.",
        )
    ],
)
def snowflake_dim_calendar(context: AssetExecutionContext, snowflake: SnowflakeResource) -> MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        for statement in ddl_statements(snowflake.database):
            cur.execute(statement)
        first, last = loaded_span(cur, day)
        where = f"WHERE CALENDAR_DATE BETWEEN '{first.isoformat()}' AND '{last.isoformat()}'"
        cur.execute(f"SELECT CALENDAR_DATE FROM {DIM_CALENDAR} {where}")
        present = {row[0] for row in cur.fetchall()}
        missing = [calendar_row(d) for d in day_range(first, last) if d not in present]
        if missing:
            cur.execute("BEGIN")
            try:
                cur.execute(
                    f"INSERT INTO {DIM_CALENDAR} (CALENDAR_DATE, WEEKDAY, WEEKDAY_NAME, IS_WEEKEND, MONTH, "
                    "QUARTER, YEAR) SELECT value[0]::DATE, value[1]::NUMBER(1, 0), value[2]::VARCHAR, "
                    "value[3]::BOOLEAN, value[4]::NUMBER(2, 0), value[5]::NUMBER(1, 0), value[6]::NUMBER(4, 0) "
                    "FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%s))) AS f "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {DIM_CALENDAR} AS c WHERE c.CALENDAR_DATE = f.value[0]::DATE)",
                    (json.dumps(missing),),
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        distinct, rows = calendar_state(cur, first, last)
    expected = len(day_range(first, last))
    context.log.info("DIM_CALENDAR %s..%s: inserted %d, %d days present", first, last, len(missing), distinct)
    check = AssetCheckResult(
        check_name=CALENDAR_CHECK,
        passed=distinct == rows == expected,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "first": first.isoformat(),
            "last": last.isoformat(),
            "expected_days": expected,
            "distinct_days": distinct,
            "rows": rows,
        },
    )
    return MaterializeResult(
        metadata={"first": first.isoformat(), "last": last.isoformat(), "inserted": len(missing), "days": expected},
        check_results=[check],
    )
