-- One row per calendar day (UTC dates, as the daily partitions), covering at least every day
-- loaded into the facts or RAW.TICKS. WEEKDAY is ISO (1 = Monday .. 7 = Sunday). Seeded by
-- snowflake_dim_calendar, which only inserts missing days (idempotent).
CREATE TABLE IF NOT EXISTS CORE.DIM_CALENDAR (
    CALENDAR_DATE DATE           NOT NULL PRIMARY KEY,
    WEEKDAY       NUMBER(1, 0)   NOT NULL,
    WEEKDAY_NAME  VARCHAR        NOT NULL,
    IS_WEEKEND    BOOLEAN        NOT NULL,
    MONTH         NUMBER(2, 0)   NOT NULL,
    QUARTER       NUMBER(1, 0)   NOT NULL,
    YEAR          NUMBER(4, 0)   NOT NULL
);
