"""IO at the edges: files, Kafka, PostgreSQL, object store, warehouse."""
