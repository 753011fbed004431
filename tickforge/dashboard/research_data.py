"""What the research page reads: the research tables in PostgreSQL (written by the research assets)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from tickforge.platform.settings import Settings
from tickforge.research.store import NEXT_DAY_PICKS, PICK_EQUITY, PICK_KEY, PICKS_SCORECARD, STRATEGY_SCORES, read_table


@dataclass(frozen=True)
class ResearchSource:
    dsn: str
    schema: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ResearchSource:
        return cls(settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name)

    def pick_days(self) -> list[date]:
        """Days with picks, newest first."""
        picks = read_table(self.dsn, self.schema, NEXT_DAY_PICKS)
        return sorted(set(picks["day"].to_list()), reverse=True)

    def picks(self, day: date) -> pl.DataFrame:
        return read_table(self.dsn, self.schema, NEXT_DAY_PICKS, '"day" = %s', [day]).sort(
            "weight", "score", descending=True
        )

    def scores(self, day: date) -> pl.DataFrame:
        return read_table(self.dsn, self.schema, STRATEGY_SCORES, '"day" = %s', [day])

    def equity(self, pick: dict) -> pl.DataFrame:
        """The stored equity curve of one pick (its backtest over the bars before its day)."""
        where = " AND ".join(f'"{k}" = %s' for k in PICK_KEY)
        return read_table(self.dsn, self.schema, PICK_EQUITY, where, [pick[k] for k in PICK_KEY]).sort("window_start")

    def scorecard(self) -> pl.DataFrame:
        return read_table(self.dsn, self.schema, PICKS_SCORECARD)
