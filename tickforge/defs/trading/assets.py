"""``paper_trading_report``: the day's picks traded on paper over the day's golden bars and quotes.

Partition P is a day of data (as in the nightly job); the picks traded are those chosen for P
(``next_day_picks`` rows with ``day = P``, written by the research assets of the weekday before,
or the file in :class:`TradingResource`). The offline paper path (:func:`tickforge.trading.replay.replay`:
runner -> risk -> OMS -> matcher -> accounting, the workers' kernels) runs over:

- the golden bars (PostgreSQL ``bars_<tf>``) of the picks' timeframes that start on New York day P,
  09:30-16:00 unless ``regular_hours`` is off;
- the day's quotes (``TradingResource.quotes_path``) and prints (the compacted raw trades of P).

Its frames go to the archive bucket under ``trading/paper/date=P/`` (orders, transitions, fills,
positions, pnl, decisions, and the report tables); the checks re-read them from there. The OMS
(orders, transitions, fills) also goes to PostgreSQL under the account ``paper-report``: the day's
orders are replaced whole, so a rerun leaves what it computed.
"""

from collections.abc import Sequence
from datetime import date

import polars as pl
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)

from tickforge.defs.lib.golden_bars import read_golden_bars
from tickforge.defs.lib.keys import bar_timeframes, golden_bars_key
from tickforge.defs.lib.partitions import daily_partitions
from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.research.store import read_rows
from tickforge.defs.s3.resources import ObjectStoreResource
from tickforge.defs.trading.resources import TradingResource
from tickforge.platform.io.files import read_quotes, read_trades
from tickforge.platform.io.raw_layout import compacted_key
from tickforge.research.bars import DAILY, next_ny_midnight_ms, ny_midnight_ms
from tickforge.research.io import load_registry
from tickforge.research.store import NEXT_DAY_PICKS
from tickforge.trading.accounting import FeeSchedule
from tickforge.trading.io import REPLAY_FILES, load_limits, read_picks_file
from tickforge.trading.picks import Pick, parse_picks
from tickforge.trading.replay import (
    DECISION_SCHEMA,
    FILL_SCHEMA,
    ORDER_SCHEMA,
    PNL_SCHEMA,
    POSITION_SCHEMA,
    TRANSITION_SCHEMA,
    ReplayResult,
    replay,
)
from tickforge.trading.report import paper_report
from tickforge.trading.sessions import regular_hours
from tickforge.trading.store import ensure_oms_tables, read_oms, replace_oms_slice

PAPER_REPORT_KEY = AssetKey("paper_trading_report")
TRADING_GROUP = "trading"
OWNERS = ["team:trading"]
PICKS_KEY = AssetKey("next_day_picks")
PAPER_ACCOUNT = "paper-report"
_EMPTY = {
    "orders": ORDER_SCHEMA,
    "transitions": TRANSITION_SCHEMA,
    "fills": FILL_SCHEMA,
    "positions": POSITION_SCHEMA,
    "pnl": PNL_SCHEMA,
    "decisions": DECISION_SCHEMA,
}


def paper_object(partition: str, name: str) -> str:
    return f"trading/paper/date={partition}/{name}.parquet"


def day_picks(trading: TradingResource, postgres: PostgresResource, day: date) -> tuple[list[Pick], list[Pick]]:
    """The picks for ``day`` (the configured file, else the research picks chosen for it): the
    intraday ones, traded on the day's golden bars, and the daily ones, which a day of intraday
    data cannot trade (their decision is the day's close)."""
    if trading.picks_path is not None:
        picks = read_picks_file(trading.picks_path)
    else:
        rows = read_rows(postgres, NEXT_DAY_PICKS, '"day" = %s', [day])
        picks = parse_picks(rows.iter_rows(named=True)) if rows.height else []
    return [p for p in picks if p.timeframe != DAILY], [p for p in picks if p.timeframe == DAILY]


def day_bars(
    trading: TradingResource, postgres: PostgresResource, picks: Sequence[Pick], day: date
) -> dict[str, pl.DataFrame]:
    """Golden bars of the picks' timeframes starting on New York day ``day`` (regular hours if so configured)."""
    start, end = ny_midnight_ms(day), next_ny_midnight_ms(day)
    out = {}
    for tf in sorted({p.timeframe for p in picks}):
        frame = pl.from_pandas(read_golden_bars(postgres, tf, start, end))
        out[tf] = regular_hours(frame, "window_start") if trading.regular_hours else frame
    return out


def day_quotes(trading: TradingResource, day: date) -> pl.DataFrame:
    quotes = read_quotes(trading.quotes_path).data
    return quotes.filter(pl.col("ts_ms").is_between(ny_midnight_ms(day), next_ny_midnight_ms(day), closed="left"))


def day_trades(trading: TradingResource, object_store: ObjectStoreResource, partition: str) -> pl.DataFrame:
    if trading.trades_path is not None:
        return read_trades(trading.trades_path).data
    return object_store.read_parquet(object_store.raw_bucket, compacted_key(partition))


def read_paper(object_store: ObjectStoreResource, partition: str) -> dict[str, pl.DataFrame]:
    return {
        name: object_store.read_parquet(object_store.archive_bucket, paper_object(partition, name))
        for name in REPLAY_FILES
    }


def store_day_oms(postgres: PostgresResource, day: date, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
    """The day's OMS in PostgreSQL (replacing the account's orders of that day), read back."""
    ensure_oms_tables(postgres.dsn, postgres.schema_name)
    start, end = ny_midnight_ms(day), next_ny_midnight_ms(day)
    with postgres.connect() as conn:
        counts = replace_oms_slice(
            conn,
            postgres.schema_name,
            PAPER_ACCOUNT,
            frames["orders"],
            frames["transitions"],
            frames["fills"],
            start,
            end,
        )
        conn.commit()
        stored = read_oms(conn, postgres.schema_name, PAPER_ACCOUNT, start, end)
    return {
        "orders_new": counts.orders_new,
        "orders": stored.orders.height,
        "transitions": stored.transitions.height,
        "fills": stored.fills.height,
    }


def _markdown(frame: pl.DataFrame) -> MetadataValue:
    if frame.is_empty():
        return MetadataValue.md("_none_")
    return MetadataValue.md(frame.to_pandas().to_markdown(index=False, floatfmt=".4g"))


def build_paper_report_asset(timeframes: Sequence[str]) -> AssetsDefinition:
    @asset(
        key=PAPER_REPORT_KEY,
        partitions_def=daily_partitions,
        deps=[
            *(golden_bars_key(tf) for tf in bar_timeframes(timeframes)),
            AssetKey("raw_trades_daily"),
            # the picks for day P are written by the research partition of the weekday before it
            AssetDep(PICKS_KEY, partition_mapping=TimeWindowPartitionMapping(start_offset=-3, end_offset=-1)),
        ],
        kinds={"python", "s3"},
        owners=OWNERS,
        group_name=TRADING_GROUP,
        description="The day's picks traded on paper over the day's golden bars, quotes and prints with "
        "the workers' kernels (runner -> risk -> OMS -> matcher -> accounting): PnL by strategy, slippage "
        "against the decision bar's close, fill ratio and rejected orders by rule. Orders, fills, "
        "positions, PnL and decisions in the archive bucket under trading/paper/date=P/.",
    )
    def paper_trading_report(
        context: AssetExecutionContext,
        trading: TradingResource,
        postgres: PostgresResource,
        object_store: ObjectStoreResource,
    ) -> MaterializeResult:
        partition = context.partition_key
        day = date.fromisoformat(partition)
        limits = load_limits(trading.limits_path)
        picks, daily = day_picks(trading, postgres, day)
        if picks:
            bars = day_bars(trading, postgres, picks, day)
            fee = FeeSchedule(taker_bps=load_registry().costs.fee_bps)
            result = replay(
                bars,
                day_quotes(trading, day),
                day_trades(trading, object_store, partition),
                picks,
                limits,
                trading.latency_ms,
                fee,
            )
            frames = {name: getattr(result, name) for name in REPLAY_FILES}
        else:
            result = None
            frames = {name: pl.DataFrame(schema=schema) for name, schema in _EMPTY.items()}
        for name, frame in frames.items():
            object_store.write_parquet(object_store.archive_bucket, paper_object(partition, name), frame)
        oms = store_day_oms(postgres, day, frames)
        report = paper_report(frames["orders"], frames["fills"], frames["positions"], frames["pnl"])
        object_store.write_parquet(
            object_store.archive_bucket, paper_object(partition, "pnl_by_strategy"), report.pnl_by_strategy
        )
        return MaterializeResult(
            metadata={
                "picks": len(picks),
                "daily_picks_not_traded": len(daily),
                **{k: v for k, v in report.totals.items() if v is not None},
                "fill_ratio": report.fill_ratio if report.fill_ratio is not None else 0.0,
                "rejected_by_rule": MetadataValue.json(report.rejected_by_rule),
                "pnl_by_strategy": _markdown(report.pnl_by_strategy),
                "slippage_by_strategy": _markdown(report.slippage_by_strategy),
                "illegal_transitions": result.illegal_transitions if isinstance(result, ReplayResult) else 0,
                "oms_in_postgres": MetadataValue.json({"account": PAPER_ACCOUNT, **oms}),
                "uri": f"s3://{object_store.archive_bucket}/{paper_object(partition, '')}",
            }
        )

    return paper_trading_report
