"""``paper_trading_report`` on the real local stack (PostgreSQL golden bars, S3 stand-in).

The demo day's BAC and AIG trades (2013-10-08) are built into golden bars by the streaming kernel
offline and stored in PostgreSQL, and stored as the day's compacted raw trades in S3 (the object
``raw_trades_daily`` writes); the BAC NBBO sample is the day's quotes. A hand-written picks file
of intraday strategies on BAC (5m, 15m) and AIG (5m, no quotes in the data), plus a daily pick
(not tradable on a day of intraday bars), is stored as the day's ``next_day_picks`` rows, where
the research assets put them, and traded. The asset
materializes with both checks passing (decisions equal the backtest's on the golden bars, fills
keep the book); its stored frames are the ones ``tickforge paper replay`` writes from the same
inputs; a decision changed in the stored frames fails the parity check.
"""

from __future__ import annotations

import polars as pl
import pytest

from tests.integration.test_dagster_nightly import DAY, _day_trades, _store_golden_bars, nightly_settings  # noqa: F401

pytestmark = pytest.mark.integration

PICKS_CSV = """\
symbol,strategy,timeframe,params,bucket,weight
BAC,ema_cross,5m,"{""fast"": 3, ""slow"": 8, ""allow_short"": true}",MED,0.3
BAC,orb_breakout,15m,"{""opening_bars"": 2, ""allow_short"": true}",HIGH,0.3
AIG,rsi_reversion,5m,"{""period"": 6, ""lower"": 35, ""upper"": 65}",LOW,0.3
BAC,donchian_breakout,1d,"{""period"": 20}",LOW,0.1
"""


def _job(s, trading, checks_only: bool = False):
    from dagster import AssetSelection, Definitions, define_asset_job

    from tickforge.defs.resources import resources_for
    from tickforge.defs.trading.assets import PAPER_REPORT_KEY
    from tickforge.defs.trading.definitions import build_trading_definitions

    selection = (
        AssetSelection.checks_for_assets(PAPER_REPORT_KEY) if checks_only else AssetSelection.assets(PAPER_REPORT_KEY)
    )
    job = define_asset_job("paper", selection=selection)
    defs = Definitions.merge(
        Definitions(resources=resources_for(s, env_secrets=False), jobs=[job]), build_trading_definitions(s, trading)
    )
    return defs.resolve_job_def("paper")


def test_paper_trading_report_on_local_stack(nightly_settings, samples, tmp_path):  # noqa: F811
    from datetime import date

    from dagster import DagsterInstance

    from tickforge.defs.research.store import replace_rows
    from tickforge.defs.resources import resources_for
    from tickforge.defs.trading.assets import day_bars, paper_object, read_paper
    from tickforge.defs.trading.resources import QUOTES_SAMPLE, TradingResource
    from tickforge.platform.io.files import read_quotes
    from tickforge.platform.io.raw_layout import LANDED_TRADES_SCHEMA, compacted_key
    from tickforge.research.scoring import PICK_SCHEMA
    from tickforge.research.store import NEXT_DAY_PICKS
    from tickforge.trading.accounting import FeeSchedule
    from tickforge.trading.io import load_limits, read_picks_file
    from tickforge.trading.replay import replay

    s = nightly_settings
    trades = _day_trades(samples)
    _store_golden_bars(s, trades)
    resources = resources_for(s, env_secrets=False)
    store, postgres = resources["object_store"], resources["postgres"]
    landed = (
        trades.data.with_columns(partition=pl.lit(0, pl.Int32))
        .select(list(LANDED_TRADES_SCHEMA))
        .cast(dict(LANDED_TRADES_SCHEMA))
    )
    store.write_parquet(store.raw_bucket, compacted_key(DAY), landed)
    picks_path = tmp_path / "picks.csv"
    picks_path.write_text(PICKS_CSV)
    rows = pl.read_csv(picks_path, infer_schema=False).with_columns(
        day=pl.lit(date.fromisoformat(DAY)), weight=pl.col("weight").cast(pl.Float64)
    )
    replace_rows(
        postgres,
        NEXT_DAY_PICKS,
        rows.with_columns(pl.lit(None).alias(c) for c in PICK_SCHEMA if c not in rows.columns),
        '"day" = %s',
        [date.fromisoformat(DAY)],
    )
    trading = TradingResource()  # picks from next_day_picks, trades from the compacted raw trades

    instance = DagsterInstance.ephemeral()
    result = _job(s, trading).execute_in_process(partition_key=DAY, instance=instance)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"paper_decisions_match_backtest", "paper_fills_keep_the_book"}
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items()}
    parity = checks["paper_decisions_match_backtest"].metadata
    assert parity["bars_compared"].value > 100 and parity["decision_changes"].value >= 4
    assert checks["paper_fills_keep_the_book"].metadata["fills"].value > 0

    meta = result.asset_materializations_for_node("paper_trading_report")[0].metadata
    assert (
        meta["picks"].value == 3
        and meta["daily_picks_not_traded"].value == 1
        and meta["fills"].value > 0
        and meta["open_positions_at_end"].value == 0
    )
    assert (
        meta["rejected_by_rule"].value == {"no_reference_price": meta["rejected"].value} and meta["rejected"].value > 0
    )
    assert 0 < meta["fill_ratio"].value <= 1
    assert "ema_cross" in meta["pnl_by_strategy"].value and "orb_breakout" in meta["slippage_by_strategy"].value

    # The stored frames are what the offline path computes from the same inputs.
    paper = read_paper(store, DAY)
    picks = [p for p in read_picks_file(picks_path) if p.timeframe != "1d"]
    quotes = read_quotes(QUOTES_SAMPLE).data
    again = replay(
        day_bars(trading, postgres, picks, date.fromisoformat(DAY)),
        quotes,
        trades.data,
        picks,
        load_limits(),
        5,
        FeeSchedule(taker_bps=1.0),
    )
    for name in ("orders", "transitions", "fills", "decisions"):
        assert paper[name].equals(getattr(again, name)), name
    assert paper["pnl"]["equity"][-1] == pytest.approx(again.pnl["equity"][-1])

    # The OMS is in PostgreSQL too, the day's slice replaced whole: a rerun stores it again, once.
    oms = meta["oms_in_postgres"].value
    assert oms == {
        "account": "paper-report",
        "orders_new": meta["orders"].value,
        "orders": meta["orders"].value,
        "transitions": paper["transitions"].height,
        "fills": meta["fills"].value,
    }
    assert _job(s, trading).execute_in_process(partition_key=DAY, instance=instance).success
    from tickforge.trading.store import read_oms

    with postgres.connect() as conn:
        stored = read_oms(conn, postgres.schema_name, "paper-report")
    assert stored.orders.height == meta["orders"].value and stored.fills.height == meta["fills"].value
    assert stored.transitions.equals(paper["transitions"].sort("client_order_id", "seq"))

    # A changed decision in the stored frames fails the parity check.
    decisions = paper["decisions"]
    flipped = decisions.with_columns(
        target=pl.when(pl.int_range(pl.len()) == 10)
        .then(1 - pl.col("target"))
        .otherwise(pl.col("target"))
        .cast(pl.Int8)
    )
    store.write_parquet(store.archive_bucket, paper_object(DAY, "decisions"), flipped)
    rerun = _job(s, trading, checks_only=True).execute_in_process(
        instance=instance, tags={"dagster/partition": DAY}, raise_on_error=False
    )
    parity_again = {e.check_name: e for e in rerun.get_asset_check_evaluations()}["paper_decisions_match_backtest"]
    assert not parity_again.passed and parity_again.metadata["mismatches"].value == 1
