"""The picks a strategy runner trades: one validated object per row of the research picks file.

A picks row is ``symbol, strategy, timeframe, params`` (a JSON object), ``bucket``, ``weight``.
Every row is checked against the strategy's own parameter schema, so a pick the runner cannot
run is refused at session start with the row and the reason, not at the first bar.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.research.scoring import PICK_COLUMNS
from tickforge.research.strategies import get_strategy
from tickforge.trading.limits import Bucket
from tickforge.trading.orders import params_hash


class PicksError(ValueError):
    """A picks table the runner cannot trade, with the row and the reason."""


@dataclass(frozen=True, slots=True)
class Pick:
    symbol: str
    strategy: str
    timeframe: str
    params: Mapping[str, Any]  # validated: defaults filled in, right types
    bucket: Bucket
    weight: float

    @property
    def book(self) -> str:
        """The pick's own account book: strategy, timeframe and parameter digest (one symbol each)."""
        return f"{self.strategy}/{self.timeframe}/{params_hash(self.params)[:8]}"

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True)


def parse_pick(row: Mapping[str, Any], where: str = "pick") -> Pick:
    missing = [c for c in PICK_COLUMNS if row.get(c) is None]
    if missing:
        raise PicksError(f"{where}: missing {', '.join(missing)}")
    symbol, name, timeframe = (str(row[c]).strip() for c in ("symbol", "strategy", "timeframe"))
    if not symbol:
        raise PicksError(f"{where}: empty symbol")
    try:
        strategy = get_strategy(name)
        timeframe_ms(timeframe)
        raw = row["params"]
        params = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(params, dict):
            raise ValueError(f"params must be a JSON object, got {raw!r}")
        params = strategy.validate(params)
        bucket = Bucket(str(row["bucket"]).strip().upper())
        weight = float(row["weight"])
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise PicksError(f"{where} ({name} on {symbol}): {e}") from None
    if not (math.isfinite(weight) and 0 < weight <= 1):
        raise PicksError(f"{where} ({name} on {symbol}): weight must be in (0, 1], got {row['weight']!r}")
    if strategy.intraday_only and timeframe == "1d":
        raise PicksError(f"{where}: {name} needs intraday bars, the pick is on 1d")
    return Pick(symbol, strategy.name, timeframe, params, bucket, weight)


def parse_picks(rows: Iterable[Mapping[str, Any]]) -> list[Pick]:
    """Picks in input order; a repeated (symbol, strategy, timeframe, params) is refused."""
    picks: list[Pick] = []
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(rows, 1):
        pick = parse_pick(row, f"pick row {i}")
        key = (pick.symbol, pick.book)
        if key in seen:
            raise PicksError(
                f"pick row {i}: {pick.strategy} on {pick.symbol} {pick.timeframe} with these params is picked twice"
            )
        seen.add(key)
        picks.append(pick)
    if not picks:
        raise PicksError("no picks")
    return picks
