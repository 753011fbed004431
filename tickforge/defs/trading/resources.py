"""The trading resource: where the paper day's picks, quotes, trades and risk limits come from."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from tickforge.platform.data_sets import SAMPLES_DIR

QUOTES_SAMPLE = SAMPLES_DIR / "us_equity_nbbo_BAC_2013-10-08.csv.gz"


class TradingResource(ConfigurableResource):
    """Inputs of the paper trading assets that are not in the stores yet, and the paper settings."""

    picks_path: str | None = Field(
        default=None,
        description="A picks file (CSV, Parquet, YAML) to trade; None: the day's rows of "
        "PostgreSQL next_day_picks (what the research assets chose for that day)",
    )
    quotes_path: str = Field(
        default=str(QUOTES_SAMPLE),
        description="Top-of-book quotes covering the day (the platform's quote "
        "files; default: the repository's BAC NBBO sample of 2013-10-08)",
    )
    trades_path: str | None = Field(
        default=None,
        description="Trades of the day (prints for the matcher and marks); None: the day's "
        "compacted raw trades (raw_trades_daily)",
    )
    limits_path: str | None = Field(default=None, description="Risk limits YAML; None: the packaged limits.yaml")
    latency_ms: int = Field(default=5, ge=0, description="Order arrival = decision (bar close) + latency")
    regular_hours: bool = Field(
        default=True, description="Trade the 09:30-16:00 New York bars only (the session's last bar closes at 16:00)"
    )
