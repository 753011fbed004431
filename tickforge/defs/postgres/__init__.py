"""PostgreSQL, seen from Dagster: the golden bars reconciled with the reference oracle, the
pipeline alerts and the run-failure sensor that records them, Dagster's own instance storage."""
