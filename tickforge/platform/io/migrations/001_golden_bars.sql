-- Golden bars: one table per timeframe, replaced whole on conflict (never accumulated), so a replay
-- or a redelivered bar writes an identical row.
CREATE SCHEMA IF NOT EXISTS {schema};

{bar_tables}

-- How far each timeframe's golden bars are complete, per source partition: the batch side (sensors,
-- reconciliation) reads min(watermark_ms) over partitions.
CREATE TABLE IF NOT EXISTS {schema}.bar_watermarks (
    timeframe    text    NOT NULL,
    partition    integer NOT NULL,
    watermark_ms bigint  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (timeframe, partition)
);
