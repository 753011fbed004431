"""Checks of ``paper_trading_report``, each re-reading what the asset stored.

- ``paper_decisions_match_backtest`` (blocking): for the day's picks, the runner's decisions equal
  the backtest's (``engine.backtest`` on the same golden bars), bar for bar.
- ``paper_fills_keep_the_book`` (blocking): every taker fill at the opposite best of the uncrossed
  quote prevailing at it and within its displayed size, no order overfilled, and the ledger
  identity ``cash + positions x mark == capital + realized + unrealized - fees`` after every fill.
"""

from datetime import date

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from tickforge.defs.postgres.resources import PostgresResource
from tickforge.defs.s3.resources import ObjectStoreResource
from tickforge.defs.trading.assets import PAPER_REPORT_KEY, day_bars, day_picks, day_quotes, read_paper
from tickforge.defs.trading.resources import TradingResource
from tickforge.trading.audit import identity_violations, overfill_violations, taker_fill_violations
from tickforge.trading.parity import decision_parity


@asset_check(
    asset=PAPER_REPORT_KEY,
    name="paper_decisions_match_backtest",
    blocking=True,
    description="For the day's picks, the runner's decisions equal the backtest's on the same golden bars, bar for bar.",
)
def paper_decisions_match_backtest(
    context: AssetCheckExecutionContext,
    trading: TradingResource,
    postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    day = date.fromisoformat(context.partition_key)
    picks, _ = day_picks(trading, postgres, day)
    decisions = read_paper(object_store, context.partition_key)["decisions"]
    report = decision_parity(decisions, day_bars(trading, postgres, picks, day), picks) if picks else []
    failed = [p for p in report if not p.passed]
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "picks": len(picks),
            "bars_compared": sum(p.bars for p in report),
            "decision_changes": sum(p.backtest_changes for p in report),
            "mismatches": sum(p.mismatches for p in report),
            "failed": MetadataValue.json(
                [
                    {
                        "symbol": p.symbol,
                        "book": p.book,
                        "bars": p.bars,
                        "decided": p.decided,
                        "mismatches": p.mismatches,
                        "first_mismatch_ms": p.first_mismatch_ms,
                    }
                    for p in failed
                ]
            ),
        },
    )


@asset_check(
    asset=PAPER_REPORT_KEY,
    name="paper_fills_keep_the_book",
    blocking=True,
    description="Taker fills at the prevailing opposite best within displayed size, no overfill, ledger identity after every fill.",
)
def paper_fills_keep_the_book(
    context: AssetCheckExecutionContext, trading: TradingResource, object_store: ObjectStoreResource
) -> AssetCheckResult:
    paper = read_paper(object_store, context.partition_key)
    quotes = day_quotes(trading, date.fromisoformat(context.partition_key))
    problems = {
        "taker_fills": taker_fill_violations(paper["fills"], quotes),
        "overfills": overfill_violations(paper["orders"], paper["fills"]),
        "identity": identity_violations(paper["pnl"]),
    }
    return AssetCheckResult(
        passed=not any(problems.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "fills": paper["fills"].height,
            **{k: len(v) for k, v in problems.items()},
            "examples": MetadataValue.json({k: v[:5] for k, v in problems.items() if v}),
        },
    )


PAPER_CHECKS = [paper_decisions_match_backtest, paper_fills_keep_the_book]
