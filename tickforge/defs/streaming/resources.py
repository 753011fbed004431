"""The Kafka resource: the cluster the streaming workers write to, for the sensors and assets that
read its topics. Consumers come from :func:`tickforge.platform.io.kafka.make_consumer`, so a
Dagster reader is configured exactly as the workers are."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer
from dagster import ConfigurableResource
from pydantic import Field

from tickforge.platform.io.kafka import make_consumer
from tickforge.platform.settings import KafkaSettings, Settings


class KafkaResource(ConfigurableResource):
    """A Kafka cluster and the deployment's topic prefix."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092")
    client_config: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties (SASL, TLS) for production clusters"
    )
    topic_prefix: str = Field(default="tickforge.", description="Prefix of every topic of the deployment")

    def topic(self, name: str) -> str:
        """A registry topic (:mod:`tickforge.platform.topics`) with the deployment's prefix."""
        return f"{self.topic_prefix}{name}"

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        """A ``read_committed`` consumer that commits nothing by itself (the workers' settings)."""
        kafka = KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            client_config=dict(self.client_config),
            topic_prefix=self.topic_prefix,
        )
        # Only the Kafka section is read by make_consumer; construct skips the environment.
        return make_consumer(Settings.model_construct(kafka=kafka), f"{self.topic_prefix}{group_id}", **overrides)


def kafka_resource(settings: Settings) -> KafkaResource:
    kafka = settings.kafka
    return KafkaResource(
        bootstrap_servers=kafka.bootstrap_servers, client_config=kafka.client_config, topic_prefix=kafka.topic_prefix
    )
