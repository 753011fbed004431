"""Tickforge: live bars and signals from Kafka ticks, with the batch side on Dagster."""

__version__ = "0.1.0"
