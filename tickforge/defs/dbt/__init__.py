"""dbt, seen from Dagster: the marts of ``dbt_marts/`` as assets downstream of the Snowflake facts."""
