-- Provenance copy of the compacted raw trades (raw_trades_daily's Parquet object), one UTC day
-- per load. Every row carries its load: the S3 object it came from, the object's content
-- checksum (SHA-256, as raw_trades_daily reports it) and when it was loaded. The loader
-- replaces a day in one transaction (DELETE the day + INSERT) and skips a day whose rows already
-- carry the same checksum and count.
CREATE TABLE IF NOT EXISTS RAW.TICKS (
    TRADE_DATE        DATE           NOT NULL,
    TS_MS             NUMBER(38, 0)  NOT NULL,
    SYMBOL            VARCHAR        NOT NULL,
    PRICE             FLOAT          NOT NULL,
    SIZE              FLOAT          NOT NULL,
    TRADE_ID          NUMBER(38, 0),
    KAFKA_PARTITION   NUMBER(38, 0)  NOT NULL,
    KAFKA_OFFSET      NUMBER(38, 0)  NOT NULL,
    SOURCE_OBJECT_KEY VARCHAR        NOT NULL,
    SOURCE_CHECKSUM   VARCHAR        NOT NULL,
    LOADED_AT         TIMESTAMP_NTZ  NOT NULL
);
