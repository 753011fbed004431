"""Dagster sensors: dead-letter rate, run failures, intraday Snowflake window loads."""
