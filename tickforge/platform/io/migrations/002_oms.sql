-- The OMS of each account (a paper replay, the paper workers, a broker account): orders, every
-- transition of their state machine (the audit trail) and their fills. Rows are keyed by the
-- deterministic ids (client_order_id, the transition's seq, fill_id) and inserted once: a replay or
-- a redelivery adds nothing and changes nothing, and an order's status only moves forward (to the
-- state of its latest transition, last_seq).
CREATE TABLE IF NOT EXISTS {schema}.oms_orders (
    account            text             NOT NULL,
    client_order_id    text             NOT NULL CHECK (length(client_order_id) <= 128),
    strategy           text             NOT NULL,
    book               text,
    timeframe          text,
    bucket             text,
    symbol             text             NOT NULL,
    side               text             NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity           double precision NOT NULL CHECK (quantity > 0),
    order_type         text             NOT NULL CHECK (order_type IN ('market', 'limit')),
    limit_price        double precision CHECK (limit_price > 0),
    time_in_force      text             NOT NULL,
    decision_ts_ms     bigint           NOT NULL,
    arrival_ts_ms      bigint           NOT NULL,
    status             text             NOT NULL,
    last_seq           integer          NOT NULL,
    filled_quantity    double precision NOT NULL DEFAULT 0,
    average_fill_price double precision,
    stored_at          timestamptz      NOT NULL DEFAULT now(),
    updated_at         timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (account, client_order_id)
);
CREATE INDEX IF NOT EXISTS oms_orders_decision ON {schema}.oms_orders (account, decision_ts_ms);

CREATE TABLE IF NOT EXISTS {schema}.oms_order_transitions (
    account         text    NOT NULL,
    client_order_id text    NOT NULL,
    seq             integer NOT NULL CHECK (seq >= 0),
    from_status     text,
    to_status       text    NOT NULL,
    ts_ms           bigint  NOT NULL,
    reason          text    NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, client_order_id, seq),
    FOREIGN KEY (account, client_order_id) REFERENCES {schema}.oms_orders (account, client_order_id)
);

CREATE TABLE IF NOT EXISTS {schema}.oms_fills (
    account         text             NOT NULL,
    fill_id         text             NOT NULL,
    client_order_id text             NOT NULL,
    symbol          text             NOT NULL,
    side            text             NOT NULL CHECK (side IN ('buy', 'sell')),
    ts_ms           bigint           NOT NULL,
    price           double precision NOT NULL CHECK (price > 0),
    quantity        double precision NOT NULL CHECK (quantity > 0),
    liquidity       text             NOT NULL CHECK (liquidity IN ('maker', 'taker')),
    fee             double precision NOT NULL DEFAULT 0,
    stored_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (account, fill_id),
    FOREIGN KEY (account, client_order_id) REFERENCES {schema}.oms_orders (account, client_order_id)
);
CREATE INDEX IF NOT EXISTS oms_fills_order ON {schema}.oms_fills (account, client_order_id);
