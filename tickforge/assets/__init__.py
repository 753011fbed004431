"""Dagster assets: the streaming side as external assets, plus the nightly batch assets."""
