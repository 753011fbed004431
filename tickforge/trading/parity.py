"""Parity of the paper path with the backtest: the same decisions on the same bars, bar for bar.

The backtest's decision at bar t is the position its book holds from bar t + 1's open
(``Backtest.equity.position[t + 1]``: the target decided at t, flat after a session's last bar),
and flat at the last bar, where the engine closes the book. The runner's decision at t is what it
wanted at t's close. Both come from the same bars (split by :func:`split_bars`), so any difference
is a defect of the live path: a bar it missed or saw twice, a history cut differently, another
session rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from tickforge.research.bars import BarSeries, split_bars
from tickforge.research.engine import Costs, backtest
from tickforge.trading.picks import Pick


@dataclass(frozen=True)
class PickParity:
    symbol: str
    book: str
    bars: int  # bars of the backtest
    decided: int  # bars the runner decided on
    mismatches: int  # bars where the decisions differ (a missing decision counts)
    first_mismatch_ms: int | None
    backtest_changes: int  # decision changes of the backtest (how much the check exercised)

    @property
    def passed(self) -> bool:
        """Same decision at every bar (a pick whose symbol had no bars decided nothing: passes)."""
        return self.mismatches == 0 and self.bars == self.decided


def backtest_decisions(series: BarSeries, pick: Pick) -> np.ndarray:
    """The backtest's decision (int8 -1/0/+1) at every bar of ``series``."""
    position = backtest(series, pick.strategy, pick.params, Costs()).equity["position"].to_numpy()
    out = np.zeros(len(series), np.int8)
    out[:-1] = position[1:]
    return out


def decision_parity(
    decisions: pl.DataFrame, bars: Mapping[str, pl.DataFrame], picks: Sequence[Pick]
) -> list[PickParity]:
    """Each pick's runner decisions (``book, symbol, window_start, target``) against the backtest's
    on ``bars`` (timeframe -> the platform's bar frame)."""
    out = []
    split: dict[str, dict[str, BarSeries]] = {}
    for pick in picks:
        if pick.timeframe not in split:
            frame = bars.get(pick.timeframe, pl.DataFrame())
            split[pick.timeframe] = {s.symbol: s for s in split_bars(frame, pick.timeframe)[0]} if frame.height else {}
        series = split[pick.timeframe].get(pick.symbol)
        mine = decisions.filter((pl.col("book") == pick.book) & (pl.col("symbol") == pick.symbol))
        if series is None or len(series) == 0:
            out.append(PickParity(pick.symbol, pick.book, 0, mine.height, mine.height, None, 0))
            continue
        expected = backtest_decisions(series, pick)
        theirs = pl.DataFrame({"window_start": series.window_start, "expected": expected})
        joined = theirs.join(mine.select("window_start", "target"), on="window_start", how="full", coalesce=True)
        differ = joined.filter(pl.col("expected").ne_missing(pl.col("target").cast(pl.Int8)))
        first = int(differ["window_start"].min()) if differ.height else None  # type: ignore[arg-type]
        changes = int(np.count_nonzero(np.diff(np.concatenate([[0], expected]))))
        out.append(PickParity(pick.symbol, pick.book, len(series), mine.height, differ.height, first, changes))
    return out
