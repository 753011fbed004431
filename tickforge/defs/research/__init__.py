"""The research loop as Dagster assets: sweeps per strategy -> scores -> next-day picks -> scorecard.

- :mod:`.assets` the assets, their lineage and where each stores its data;
- :mod:`.checks` the checks (finite metrics, look-ahead, budget, trades vs equity, reproducibility);
- :mod:`.warehouse` the Snowflake loads (CORE.FACT_BACKTEST_RESULTS, CORE.NEXT_DAY_PICKS);
- :mod:`.jobs` the research job and how its per-strategy steps run across machines;
- :mod:`.resources` the daily-bar file, the registry and the picks folder;
- :mod:`.store` the research tables in PostgreSQL;
- :mod:`.definitions` what :mod:`tickforge.definitions` merges into the code location.
"""
