-- Research results: every scored sweep row of a pick day (one strategy, timeframe, symbol and
-- parameter set over the in-sample window before DAY) and the picks chosen from them. DAY is the
-- trading day the picks are for; PERIOD_START/PERIOD_END (epoch ms, end exclusive) bound the bars
-- used, all before DAY. research loads replace a DAY at a time (DELETE the day + INSERT).
CREATE TABLE IF NOT EXISTS CORE.FACT_BACKTEST_RESULTS (
    DAY              DATE           NOT NULL,
    SYMBOL           VARCHAR        NOT NULL,
    TIMEFRAME        VARCHAR        NOT NULL,
    STRATEGY         VARCHAR        NOT NULL,
    PARAMS           VARCHAR        NOT NULL,
    PERIOD_START     NUMBER(38, 0)  NOT NULL,
    PERIOD_END       NUMBER(38, 0)  NOT NULL,
    N_BARS           NUMBER(38, 0)  NOT NULL,
    N_TRADES         NUMBER(38, 0)  NOT NULL,
    TOTAL_RETURN     FLOAT          NOT NULL,
    SHARPE           FLOAT          NOT NULL,
    SORTINO          FLOAT          NOT NULL,
    MAX_DRAWDOWN     FLOAT          NOT NULL,
    WIN_RATE         FLOAT          NOT NULL,
    EXPOSURE         FLOAT          NOT NULL,
    TURNOVER         FLOAT          NOT NULL,
    AVG_HOLDING_BARS FLOAT          NOT NULL,
    STABILITY        FLOAT          NOT NULL,
    N_TRIALS         NUMBER(38, 0)  NOT NULL,
    DSR              FLOAT          NOT NULL,
    SCORE            FLOAT          NOT NULL,
    BUCKET           VARCHAR        NOT NULL,
    GATE             VARCHAR,
    LOADED_AT        TIMESTAMP_NTZ  NOT NULL,
    PRIMARY KEY (DAY, SYMBOL, TIMEFRAME, STRATEGY, PARAMS)
);
CREATE TABLE IF NOT EXISTS CORE.NEXT_DAY_PICKS (
    DAY          DATE           NOT NULL,
    SYMBOL       VARCHAR        NOT NULL,
    STRATEGY     VARCHAR        NOT NULL,
    TIMEFRAME    VARCHAR        NOT NULL,
    PARAMS       VARCHAR        NOT NULL,
    BUCKET       VARCHAR        NOT NULL,
    WEIGHT       FLOAT          NOT NULL,
    SCORE        FLOAT          NOT NULL,
    DSR          FLOAT          NOT NULL,
    SHARPE       FLOAT          NOT NULL,
    TOTAL_RETURN FLOAT          NOT NULL,
    MAX_DRAWDOWN FLOAT          NOT NULL,
    PERIOD_START NUMBER(38, 0)  NOT NULL,
    PERIOD_END   NUMBER(38, 0)  NOT NULL,
    LOADED_AT    TIMESTAMP_NTZ  NOT NULL,
    PRIMARY KEY (DAY, SYMBOL, STRATEGY, TIMEFRAME, PARAMS)
);
