-- Products: the source of truth. Each field carries its own version (occurred_at, event_id):
-- last writer wins per field, whatever order events arrive in.
CREATE TABLE products (
    product_id        TEXT PRIMARY KEY,
    price             NUMERIC CHECK (price >= 0 AND price <= 1000000000),
    price_occurred_at TIMESTAMPTZ,
    price_event_id    TEXT COLLATE "C",
    stock             INTEGER CHECK (stock >= 0),
    stock_occurred_at TIMESTAMPTZ,
    stock_event_id    TEXT COLLATE "C",
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The inbox: one row per event ever applied, written in the same transaction as its effect,
-- so a redelivered or repeated event is recognised and never applied twice.
CREATE TABLE processed_events (
    event_id     TEXT COLLATE "C" PRIMARY KEY,
    product_id   TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX processed_events_product ON processed_events (product_id, processed_at);
