"""The streaming definitions, merged into the code location by :mod:`tickforge.definitions`."""

from __future__ import annotations

from dagster import Definitions

from tickforge.defs.streaming.assets import streaming_specs
from tickforge.defs.streaming.dead_letters import build_dead_letter_rate_check, build_dead_letter_sensor
from tickforge.defs.streaming.resources import kafka_resource
from tickforge.defs.streaming.watermarks import (
    build_streaming_freshness_sensor,
    build_streaming_watermark_sensor,
    streaming_freshness_checks,
)
from tickforge.platform.settings import Settings


def build_streaming_definitions(settings: Settings) -> Definitions:
    timeframes = settings.streaming.timeframes
    freshness_checks = streaming_freshness_checks(timeframes)
    return Definitions(
        assets=streaming_specs(timeframes, settings.kafka.topic_prefix, settings.postgres.schema_name),
        asset_checks=[*freshness_checks, build_dead_letter_rate_check()],
        sensors=[
            build_dead_letter_sensor(),
            build_streaming_watermark_sensor(timeframes),
            build_streaming_freshness_sensor(freshness_checks),
        ],
        resources={"kafka": kafka_resource(settings)},
    )
