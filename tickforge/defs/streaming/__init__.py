"""Kafka and the streaming workers, seen from Dagster: the topics and golden tables as external
assets, the watermark and freshness sensors, the dead-letter sensor and rate check."""
