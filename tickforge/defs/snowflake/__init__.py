"""Snowflake, seen from Dagster: the raw ticks, bar facts (nightly and per 5-minute window), dead
letters per minute and the calendar loaded into the warehouse, with their checks."""
