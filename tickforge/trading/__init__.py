"""Trading room: orders, OMS, accounting, paper matching and risk as pure kernels.

Nothing here knows Kafka, files (except the limits file watcher at the edge of ``limits``) or
Dagster; workers and the paper replay feed these kernels events and persist what they return.
The edges of the room: ``io`` (picks, limits and replay files), ``store`` (the OMS in
PostgreSQL), ``alpaca`` (a broker behind the ``gateway`` interface, over HTTP) and ``cli``.
"""
