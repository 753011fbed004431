-- Symbols seen in the facts, with the span of bars loaded for them (epoch ms).
CREATE TABLE IF NOT EXISTS CORE.DIM_SYMBOL (
    SYMBOL             VARCHAR        NOT NULL PRIMARY KEY,
    FIRST_WINDOW_START NUMBER(38, 0)  NOT NULL,
    LAST_WINDOW_START  NUMBER(38, 0)  NOT NULL,
    UPDATED_AT         TIMESTAMP_NTZ  NOT NULL
);
