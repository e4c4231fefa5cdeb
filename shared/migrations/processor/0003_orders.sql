-- Orders, applied on their product's shard in order with the product's updates. Stock is
-- reserved in the same transaction as the inbox row, so an order is never applied twice and
-- never drives stock below zero.
CREATE TABLE orders (
    order_id   TEXT PRIMARY KEY,
    sku        TEXT NOT NULL,
    qty        INTEGER NOT NULL CHECK (qty >= 1),
    email      TEXT,
    status     TEXT NOT NULL CHECK (status IN ('created', 'rejected')),
    reason     TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
