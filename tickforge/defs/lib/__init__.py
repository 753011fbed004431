"""What the integrations' definitions share: asset keys, partitions, frame schemas, secrets, the
Snowflake load helpers. Library code only: no asset, sensor or job is defined here."""
