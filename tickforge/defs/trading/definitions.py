"""The trading definitions, merged into the code location by :mod:`tickforge.definitions`."""

from __future__ import annotations

from dagster import Definitions

from tickforge.defs.trading.assets import build_paper_report_asset
from tickforge.defs.trading.checks import PAPER_CHECKS
from tickforge.defs.trading.resources import TradingResource
from tickforge.platform.settings import Settings


def build_trading_definitions(settings: Settings, trading: TradingResource | None = None) -> Definitions:
    """The paper trading report and its checks; ``trading`` overrides the default inputs."""
    return Definitions(
        assets=[build_paper_report_asset(settings.streaming.timeframes)],
        asset_checks=PAPER_CHECKS,
        resources={"trading": trading or TradingResource()},
    )
