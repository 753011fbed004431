"""Dagster definitions by integration, each folder with its assets, checks, jobs and resources side by side."""
