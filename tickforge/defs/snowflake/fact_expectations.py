"""A great-expectations suite on the Snowflake facts, as an asset check of ``snowflake_bar_facts``.

The check fetches the partition's rows of ``CORE.FACT_TICKS_60S`` and ``CORE.FACT_TICKS_300S``
from the warehouse and validates each DataFrame in an ephemeral GE context (nothing is written
to disk): BAR_ID unique and not null, ``HIGH >= LOW``, ``HIGH >= OPEN/CLOSE``, ``LOW <=
OPEN/CLOSE``, ``VOLUME > 0``, ``TRADE_COUNT >= 1`` and the window alignment
(``WINDOW_START % window == 0``, ``WINDOW_END - WINDOW_START == window``). great-expectations
costs 4-6 s to import, so it is imported inside the check only.
"""

from typing import TYPE_CHECKING, Any

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)
from dagster_snowflake import SnowflakeResource

from tickforge.defs.lib.partitions import day_bounds_ms
from tickforge.defs.snowflake.warehouse import FACT_TABLES, snowflake_bar_facts
from tickforge.platform.bars.timeframes import timeframe_ms

if TYPE_CHECKING:  # great-expectations is imported inside the check only (slow import)
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult

CHECK_NAME = "facts_pass_expectations"
FACT_COLUMNS = (
    "BAR_ID",
    "SYMBOL",
    "WINDOW_START",
    "WINDOW_END",
    "OPEN",
    "HIGH",
    "LOW",
    "CLOSE",
    "VOLUME",
    "TRADE_COUNT",
)


def fetch_facts(snowflake: SnowflakeResource, fact: str, start_ms: int, end_ms: int) -> pd.DataFrame:
    with snowflake.get_connection() as conn:
        cur = conn.cursor()
        cur.execute(f"USE DATABASE {snowflake.database}")
        cur.execute(
            f"SELECT {', '.join(FACT_COLUMNS)} FROM {fact} "
            f"WHERE WINDOW_START >= {int(start_ms)} AND WINDOW_START < {int(end_ms)}"
        )
        frame = cur.fetch_pandas_all()
    frame.columns = [c.upper() for c in frame.columns]
    return frame


def expectations(window_ms: int) -> list[Any]:
    import great_expectations.expectations as gxe  # imported here: 4-6 s

    pair = gxe.ExpectColumnPairValuesAToBeGreaterThanB
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="BAR_ID"),
        gxe.ExpectColumnValuesToBeUnique(column="BAR_ID"),
        pair(column_A="HIGH", column_B="LOW", or_equal=True),
        pair(column_A="HIGH", column_B="OPEN", or_equal=True),
        pair(column_A="HIGH", column_B="CLOSE", or_equal=True),
        pair(column_A="OPEN", column_B="LOW", or_equal=True),
        pair(column_A="CLOSE", column_B="LOW", or_equal=True),
        gxe.ExpectColumnValuesToBeBetween(column="VOLUME", min_value=0, strict_min=True),
        gxe.ExpectColumnValuesToBeBetween(column="TRADE_COUNT", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="WINDOW_OFFSET", value_set=[0]),
        gxe.ExpectColumnValuesToBeInSet(column="WINDOW_LENGTH", value_set=[window_ms]),
    ]


def failed_expectation(outcome: "ExpectationValidationResult") -> dict[str, Any]:
    """One failed expectation's report: its type, its kwargs (no batch id) and the unexpected count."""
    config = outcome.expectation_config
    # A suite's results always carry the expectation they evaluated; None would be a GX bug.
    if config is None:
        raise ValueError("an expectation result names no expectation configuration")
    return {
        "expectation": config.type,
        "kwargs": {k: v for k, v in config.kwargs.items() if k != "batch_id"},
        "unexpected_count": outcome.result.get("unexpected_count"),
    }


def validate_facts(frames: dict[str, tuple[pd.DataFrame, int]]) -> dict[str, dict[str, Any]]:
    """``{fact: (rows, window ms)}`` -> per fact: success, rows and the failed expectations."""
    import great_expectations as gx  # imported here: 4-6 s
    from great_expectations.data_context.types.base import ProgressBarsConfig  # imported here: part of the slow import

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("facts")
    out: dict[str, dict[str, Any]] = {}
    for fact, (frame, window_ms) in frames.items():
        name = fact.replace(".", "_").lower()
        data = frame.assign(
            WINDOW_OFFSET=frame["WINDOW_START"].astype("int64") % window_ms,
            WINDOW_LENGTH=frame["WINDOW_END"].astype("int64") - frame["WINDOW_START"].astype("int64"),
        )
        batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations(window_ms))
        result = batch_def.get_batch(batch_parameters={"dataframe": data}).validate(suite)
        failed = [failed_expectation(r) for r in result.results if not r.success]
        out[fact] = {
            "success": bool(result.success) and len(frame) > 0,
            "rows": len(frame),
            "evaluated": len(result.results),
            "failed": failed,
        }
    return out


@asset_check(
    asset=snowflake_bar_facts,
    name=CHECK_NAME,
    blocking=True,
    description="great-expectations suite on the day's rows of CORE.FACT_TICKS_60S / _300S: BAR_ID "
    "unique and not null, HIGH >= LOW/OPEN/CLOSE, LOW <= OPEN/CLOSE, VOLUME > 0, TRADE_COUNT >= 1, "
    "windows aligned to the clock and of the table's length.",
)
def facts_pass_expectations(context: AssetCheckExecutionContext, snowflake: SnowflakeResource) -> AssetCheckResult:
    day = context.partition_key
    start_ms, end_ms = day_bounds_ms(day)
    frames = {
        fact: (fetch_facts(snowflake, fact, start_ms, end_ms), timeframe_ms(tf)) for tf, fact in FACT_TABLES.items()
    }
    report = validate_facts(frames)
    return AssetCheckResult(
        passed=all(r["success"] for r in report.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "day": day,
            **{f"{fact}_rows": r["rows"] for fact, r in report.items()},
            "failed_expectations": sum(len(r["failed"]) for r in report.values()),
            "report": MetadataValue.json(report),
        },
    )
