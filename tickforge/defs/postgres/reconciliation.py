"""``bar_reconciliation``: the golden bars of one UTC day checked against an independent oracle.

The day's raw trades (``raw_trades_daily``, compacted from the landing in object storage) go
through :mod:`tickforge.platform.bars.reference`, which
shares no code with the streaming kernel, and every timeframe's result is compared bar by bar
with the golden table in PostgreSQL (:mod:`tickforge.platform.bars.compare`). The report (one
row per timeframe and symbol) is validated with a pandera schema, archived as Parquet and
summarised in the materialization metadata; the blocking check beside it fails on any difference,
which keeps the warehouse load of the same run from publishing disputed bars.
"""

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pandera.pandas as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from tickforge.defs.lib.golden_bars import read_golden_bars
from tickforge.defs.lib.keys import golden_bars_key
from tickforge.defs.lib.partitions import daily_partitions, day_bounds_ms
from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.s3.resources import ObjectStoreResource
from tickforge.platform.bars.compare import compare_bars
from tickforge.platform.bars.reference import reference_bars
from tickforge.platform.bars.timeframes import bar_timeframes
from tickforge.platform.io.raw_layout import read_day_trades

COUNT_COLUMNS = ("expected", "actual", "missing", "extra", "duplicated", "differing")
DIFF_COLUMNS = ("missing", "extra", "duplicated", "differing")


class ReconciliationReport(pa.DataFrameModel):
    """One row per (timeframe, symbol): bar counts on each side and differences by kind."""

    timeframe: str
    symbol: str
    expected: int = pa.Field(ge=0, description="bars the reference oracle builds")
    actual: int = pa.Field(ge=0, description="golden bars stored")
    missing: int = pa.Field(ge=0, description="expected but not stored")
    extra: int = pa.Field(ge=0, description="stored but not expected")
    duplicated: int = pa.Field(ge=0, description="keys stored more than once")
    differing: int = pa.Field(ge=0, description="bars present on both sides with a different field")

    class Config:
        strict = True
        coerce = True
        unique = ["timeframe", "symbol"]


def reference_bars_by_partition(trades, timeframes: Sequence[str], lateness_ms: int) -> dict[str, pd.DataFrame]:
    """The oracle run per Kafka partition (``partition`` column), as the live workers keep one
    watermark per partition; ``row`` orders arrival within a partition. Symbols never span
    partitions (keyed by symbol), so the per-partition bars simply add up."""
    if "partition" not in trades.columns or trades.height == 0:
        return reference_bars(trades, timeframes, lateness_ms=lateness_ms)
    parts: dict[str, list[pd.DataFrame]] = {tf: [] for tf in timeframes}
    for _, group in trades.group_by(["partition"], maintain_order=True):
        for tf, bars in reference_bars(group.drop("partition"), timeframes, lateness_ms=lateness_ms).items():
            parts[tf].append(bars)
    return {
        tf: pd.concat(frames, ignore_index=True).sort_values(["symbol", "window_start"]).reset_index(drop=True)
        for tf, frames in parts.items()
    }


def report_key(day: str) -> str:
    return f"reports/bar_reconciliation/date={day}/report.parquet"


def _per_symbol(frame: pd.DataFrame, name: str) -> pd.Series:
    if frame.empty:
        return pd.Series(dtype="int64", name=name)
    return frame.groupby("symbol").size().rename(name)


def reconcile_timeframe(
    timeframe: str, golden: pd.DataFrame, expected: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Report rows of one timeframe and the comparer's JSON summary."""
    diff = compare_bars(golden, expected)
    differing_keys = diff.differing[list(diff.keys)].drop_duplicates()
    counts = pd.concat(
        [
            _per_symbol(expected, "expected"),
            _per_symbol(golden, "actual"),
            _per_symbol(diff.missing, "missing"),
            _per_symbol(diff.extra, "extra"),
            _per_symbol(diff.duplicated, "duplicated"),
            _per_symbol(differing_keys, "differing"),
        ],
        axis=1,
    )
    counts = counts.reindex(columns=list(COUNT_COLUMNS)).fillna(0).astype("int64")
    counts.index.name = "symbol"
    rows = counts.reset_index().assign(timeframe=timeframe)
    summary = diff.summary()
    if diff.missing_columns:
        raise ValueError(f"golden {timeframe} bars lack columns {list(diff.missing_columns)}")
    return rows[["timeframe", "symbol", *COUNT_COLUMNS]], summary


def _markdown(report: pd.DataFrame) -> str:
    if report.empty:
        return "_no bars on either side_"
    return report.to_markdown(index=False)


def build_bar_reconciliation(timeframes: Sequence[str], lateness_ms: int):
    """The reconciliation asset and its blocking check, for the deployment's timeframes."""
    frames = bar_timeframes(timeframes)

    @asset(
        name="bar_reconciliation",
        partitions_def=daily_partitions,
        deps=[AssetKey("raw_trades_daily"), *(golden_bars_key(tf) for tf in frames)],
        kinds={"python", "postgres"},
        owners=["team:market-data"],
        group_name="quality",
        description="Golden bars of one UTC day vs bars recomputed from that day's raw trades by "
        "the independent reference oracle: missing/extra/duplicated/differing counts by "
        "timeframe and symbol.",
        metadata={"timeframes": frames, "lateness_ms": lateness_ms},
    )
    def bar_reconciliation(
        context: AssetExecutionContext,
        postgres: PostgresResource,
        object_store: ObjectStoreResource,
    ) -> MaterializeResult:
        day = context.partition_key
        start_ms, end_ms = day_bounds_ms(day)
        trades = read_day_trades(object_store, day)
        context.log.info("%s: %d raw trades", day, trades.height)
        expected = reference_bars_by_partition(trades, frames, lateness_ms)
        parts, summaries = [], {}
        for tf in frames:
            golden = read_golden_bars(postgres, tf, start_ms, end_ms)
            rows, summaries[tf] = reconcile_timeframe(tf, golden, expected[tf])
            parts.append(rows)
        report = (
            pd.concat(parts, ignore_index=True)
            if parts
            else pd.DataFrame(columns=["timeframe", "symbol", *COUNT_COLUMNS])
        )
        report = ReconciliationReport.validate(report)
        key = report_key(day)
        object_store.write_parquet(object_store.archive_bucket, key, report)
        totals = {c: int(report[c].sum()) for c in COUNT_COLUMNS}
        return MaterializeResult(
            metadata={
                "raw_trades": trades.height,
                **{f"total_{c}": v for c, v in totals.items()},
                "report": MetadataValue.md(_markdown(report)),
                "report_uri": f"s3://{object_store.archive_bucket}/{key}",
                "comparison": MetadataValue.json(summaries),
            }
        )

    @asset_check(
        asset=bar_reconciliation,
        name="golden_bars_match_reference",
        blocking=True,
        description="Fails when any golden bar of the day is missing, extra, duplicated or "
        "differs from the reference oracle.",
    )
    def golden_bars_match_reference(
        context: AssetCheckExecutionContext, object_store: ObjectStoreResource
    ) -> AssetCheckResult:
        day = context.partition_key
        report = ReconciliationReport.validate(
            object_store.read_parquet(object_store.archive_bucket, report_key(day)).to_pandas()
        )
        bad = report[report[list(DIFF_COLUMNS)].sum(axis=1) > 0]
        return AssetCheckResult(
            passed=bad.empty,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "day": day,
                **{c: int(report[c].sum()) for c in DIFF_COLUMNS},
                "bars_compared": int(report["expected"].sum()),
                "failing": MetadataValue.md(_markdown(bad)) if not bad.empty else "none",
            },
        )

    return bar_reconciliation, golden_bars_match_reference
