-- One row per golden bar. BAR_ID = <symbol>-<window_start ms>-<window seconds>.
-- CLOSED_AT_MS: wall clock (epoch ms) when the streaming worker emitted the golden bar (null
-- when unknown, e.g. bars built offline); emit latency = CLOSED_AT_MS - WINDOW_END.
-- Snowflake does not enforce the primary key: the loader upserts on BAR_ID and a check
-- verifies that no BAR_ID repeats.
CREATE TABLE IF NOT EXISTS CORE.FACT_TICKS_60S (
    BAR_ID       VARCHAR        NOT NULL PRIMARY KEY,
    SYMBOL       VARCHAR        NOT NULL,
    WINDOW_START NUMBER(38, 0)  NOT NULL,
    WINDOW_END   NUMBER(38, 0)  NOT NULL,
    BAR_TS       TIMESTAMP_NTZ  NOT NULL,
    OPEN         FLOAT          NOT NULL,
    HIGH         FLOAT          NOT NULL,
    LOW          FLOAT          NOT NULL,
    CLOSE        FLOAT          NOT NULL,
    VOLUME       FLOAT          NOT NULL,
    NOTIONAL     FLOAT          NOT NULL,
    VWAP         FLOAT          NOT NULL,
    TRADE_COUNT  NUMBER(38, 0)  NOT NULL,
    CLOSED_AT_MS NUMBER(38, 0),
    LOADED_AT    TIMESTAMP_NTZ  NOT NULL
);
CREATE TABLE IF NOT EXISTS CORE.FACT_TICKS_300S (
    BAR_ID       VARCHAR        NOT NULL PRIMARY KEY,
    SYMBOL       VARCHAR        NOT NULL,
    WINDOW_START NUMBER(38, 0)  NOT NULL,
    WINDOW_END   NUMBER(38, 0)  NOT NULL,
    BAR_TS       TIMESTAMP_NTZ  NOT NULL,
    OPEN         FLOAT          NOT NULL,
    HIGH         FLOAT          NOT NULL,
    LOW          FLOAT          NOT NULL,
    CLOSE        FLOAT          NOT NULL,
    VOLUME       FLOAT          NOT NULL,
    NOTIONAL     FLOAT          NOT NULL,
    VWAP         FLOAT          NOT NULL,
    TRADE_COUNT  NUMBER(38, 0)  NOT NULL,
    CLOSED_AT_MS NUMBER(38, 0),
    LOADED_AT    TIMESTAMP_NTZ  NOT NULL
);
-- Tables created before CLOSED_AT_MS existed get the column.
ALTER TABLE CORE.FACT_TICKS_60S ADD COLUMN IF NOT EXISTS CLOSED_AT_MS NUMBER(38, 0);
ALTER TABLE CORE.FACT_TICKS_300S ADD COLUMN IF NOT EXISTS CLOSED_AT_MS NUMBER(38, 0);
