"""Object storage, seen from Dagster: the landed raw trades compacted per day, and the golden
bars past retention archived as Parquet."""
