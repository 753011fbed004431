"""The object storage definitions, merged into the code location by :mod:`tickforge.definitions`."""

from __future__ import annotations

from dagster import Definitions

from tickforge.defs.s3.archive import build_bar_archive
from tickforge.defs.s3.compaction import raw_trades_daily
from tickforge.defs.s3.resources import object_store_resource
from tickforge.platform.settings import Settings


def build_s3_definitions(settings: Settings) -> Definitions:
    bar_archive, archive_check = build_bar_archive(settings.streaming.timeframes)
    return Definitions(
        assets=[raw_trades_daily, bar_archive],
        asset_checks=[archive_check],
        resources={"object_store": object_store_resource(settings)},
    )
