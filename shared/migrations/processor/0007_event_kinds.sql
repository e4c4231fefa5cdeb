-- An event's identity is its kind and its id: an order and a product update may carry the same
-- event id (an update keyed `order:o1` beside the order `o1`) and must never be taken for
-- duplicates of each other.
ALTER TABLE processed_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'product.update';
UPDATE processed_events p SET kind = 'order.create'
FROM orders o WHERE p.event_id = 'order:' || o.order_id;
ALTER TABLE processed_events ALTER COLUMN kind DROP DEFAULT;
ALTER TABLE processed_events DROP CONSTRAINT processed_events_pkey;
ALTER TABLE processed_events ADD PRIMARY KEY (event_id, kind);

ALTER TABLE outbox ADD COLUMN source_kind TEXT NOT NULL DEFAULT 'product.update';
UPDATE outbox x SET source_kind = 'order.create'
FROM orders o WHERE x.source_event_id = 'order:' || o.order_id;
ALTER TABLE outbox ALTER COLUMN source_kind DROP DEFAULT;
