"""Trading room: orders, OMS, accounting, paper matching and risk as pure kernels.

Nothing here knows Kafka, files (except the limits file watcher at the edge of ``limits``) or
Dagster; workers and the paper replay feed these kernels events and persist what they return.
"""
