-- The warehouse database ({database} is Settings.snowflake.database). Idempotent.
CREATE DATABASE IF NOT EXISTS {database};
USE DATABASE {database};
