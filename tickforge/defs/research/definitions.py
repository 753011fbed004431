"""The research definitions, merged into the code location by :mod:`tickforge.definitions`."""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions

from tickforge.defs.research.assets import (
    build_picks_asset,
    build_scorecard_asset,
    build_scores_asset,
    build_sweep_asset,
    daily_bars_spec,
    golden_timeframes,
)
from tickforge.defs.research.checks import PICK_CHECKS, build_sweep_check, scorecard_covers_picks, scores_finite
from tickforge.defs.research.jobs import research_job
from tickforge.defs.research.resources import DAILY_BARS_SAMPLE, ResearchResource
from tickforge.defs.research.warehouse import snowflake_backtest_results, snowflake_next_day_picks
from tickforge.platform.settings import Settings
from tickforge.research.io import load_registry


def build_research_definitions(
    settings: Settings,
    registry_path: str | None = None,
    daily_bars_path: str | None = None,
) -> Definitions:
    """Assets, checks, job and resource of the research loop; the registry and the daily bars are the
    arguments' or the settings' (``TICKFORGE_RESEARCH__REGISTRY_PATH`` / ``__DAILY_BARS_PATH``), else the defaults."""
    registry_path = registry_path or (str(settings.research.registry_path) if settings.research.registry_path else None)
    daily_bars_path = daily_bars_path or (
        str(settings.research.daily_bars_path) if settings.research.daily_bars_path else None
    )
    registry = load_registry(registry_path)
    strategies = list(registry.strategies)
    golden = golden_timeframes(registry, settings.streaming.timeframes)
    bars_path = daily_bars_path or str(DAILY_BARS_SAMPLE)
    research = ResearchResource(
        daily_bars_path=bars_path,
        registry_path=registry_path,
        golden_timeframes=golden,
        picks_dir=str(Path(settings.state_dir) / "research" / "picks"),
    )
    return Definitions(
        assets=[
            daily_bars_spec(bars_path),
            *(build_sweep_asset(s, golden) for s in strategies),
            build_scores_asset(strategies),
            build_picks_asset(),
            build_scorecard_asset(),
            snowflake_backtest_results,
            snowflake_next_day_picks,
        ],
        asset_checks=[*(build_sweep_check(s) for s in strategies), scores_finite, *PICK_CHECKS, scorecard_covers_picks],
        jobs=[research_job],
        resources={"research": research},
    )
