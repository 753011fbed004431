"""The research resource: where the daily bars, the strategy registry and the picks files live."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from dagster import ConfigurableResource
from pydantic import Field

from tickforge.platform.data_sets import SAMPLES_DIR
from tickforge.research.bars import BarSeries
from tickforge.research.io import load_registry, read_bars
from tickforge.research.registry import Registry

DAILY_BARS_SAMPLE = SAMPLES_DIR / "us_equity_daily_bars_10_symbols_1998-2021.csv.gz"


class ResearchResource(ConfigurableResource):
    """Inputs and outputs of the research assets that are files, not stores."""

    daily_bars_path: str = Field(
        default=str(DAILY_BARS_SAMPLE),
        description="Daily bars: the CSV(.gz) layout date,symbol,open,high,low,close,volume,adj_factor "
        "or the platform's bar Parquet (default: the repository's ten-symbol sample)",
    )
    registry_path: str | None = Field(default=None, description="Strategy registry YAML (None: the packaged one)")
    picks_dir: str = Field(description="Folder of the picks files the strategy runners read")
    golden_timeframes: list[str] = Field(
        default_factory=list, description="Intraday timeframes whose golden bars (PostgreSQL) the sweeps read"
    )
    raw_prices: bool = Field(default=False, description="Daily CSV: raw prices instead of price x adj_factor")
    regular_hours: bool = Field(
        default=True,
        description="Intraday golden bars cut to the regular hours of their symbol's class (09:30-16:00 New York "
        "for US equities; crypto and FX keep their day), the hours the trading path trades; False: every bar",
    )

    def registry(self) -> Registry:
        return load_registry(self.registry_path)

    def daily_bars(self) -> tuple[list[BarSeries], pl.DataFrame]:
        """Series per symbol and the dead-lettered rows of the daily bar file."""
        return read_bars(self.daily_bars_path, self.raw_prices)

    def picks_path(self, day: str, suffix: str) -> Path:
        return Path(self.picks_dir) / f"date={day}" / f"next_day_picks.{suffix}"

    def latest_picks_path(self, suffix: str) -> Path:
        return Path(self.picks_dir) / f"next_day_picks.{suffix}"
