-- Dead letters (rejected input, from the dead-letter Kafka topic) counted per minute, one row per
-- (MINUTE_START, REASON, SYMBOL, SOURCE). MINUTE_START (epoch ms, a multiple of 60 000) is the
-- minute of the dead letter's event time (TS_MS) or, when it carries none (e.g. a malformed file
-- row), of its Kafka timestamp. SYMBOL is '' when the dead letter names none; SOURCE is the input
-- it was rejected from (a file name, a topic). snowflake_dead_letter_facts owns a UTC day at a
-- time: it replaces the day's rows in one transaction (DELETE the day + INSERT) and leaves a day
-- alone whose rows already equal the topic's counts.
CREATE TABLE IF NOT EXISTS CORE.FACT_DEAD_LETTERS_1M (
    MINUTE_START      NUMBER(38, 0)  NOT NULL,
    REASON            VARCHAR        NOT NULL,
    SYMBOL            VARCHAR        NOT NULL,
    SOURCE            VARCHAR        NOT NULL,
    DEAD_LETTER_COUNT NUMBER(38, 0)  NOT NULL,
    LOADED_AT         TIMESTAMP_NTZ  NOT NULL,
    PRIMARY KEY (MINUTE_START, REASON, SYMBOL, SOURCE)
);
