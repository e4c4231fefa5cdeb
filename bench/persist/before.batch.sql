-- One batch of 16 product updates as the processor wrote it before migration 0023 (pgbench
-- script; before.sql): the inbox rows, the products' rows locked and saved, a product.updated
-- announcement each in the outbox, in one transaction; then, as after the broker's confirms,
-- the outbox rows deleted.
\set n 16
BEGIN;
INSERT INTO processed_events (event_id, kind, product_id, occurred_at, received_at, owner)
    SELECT * FROM (
        SELECT gen_random_uuid()::text AS event_id, 'product.update' AS kind,
               'p-' || (random() * 10000)::int AS product_id, now() AS occurred_at,
               now() AS received_at, 'bench' AS owner
        FROM generate_series(1, :n)) e
    WHERE e.owner = '' OR NOT EXISTS (
        SELECT 1 FROM processed_events p
        WHERE p.event_id = e.event_id AND p.kind = e.kind AND p.owner = '')
    ON CONFLICT (event_id, kind, owner) DO NOTHING RETURNING kind, owner, event_id;
SELECT product_id, price, price_occurred_at, price_event_id, stock, stock_occurred_at,
       stock_event_id, updated_at
    FROM products
    WHERE product_id = ANY (ARRAY(SELECT 'p-' || (random() * 10000)::int FROM generate_series(1, :n)))
    ORDER BY product_id FOR UPDATE;
INSERT INTO products AS p (product_id, price, price_occurred_at, price_event_id)
    SELECT DISTINCT ON (id) id, 10 + (random() * 90)::numeric(10, 2), now(), gen_random_uuid()::text
    FROM (SELECT 'p-' || (random() * 10000)::int AS id FROM generate_series(1, :n)) ids
    ON CONFLICT (product_id) DO UPDATE SET price = excluded.price,
        price_occurred_at = excluded.price_occurred_at, price_event_id = excluded.price_event_id,
        updated_at = now()
    RETURNING p.product_id, p.updated_at;
WITH written AS (
    INSERT INTO outbox (event_id, source_kind, source_event_id, routing_key, payload,
                        source_owner)
        SELECT 'msg_' || md5(random()::text), 'product.update', gen_random_uuid()::text,
               'product.updated',
               '{"type":"product.updated","timestamp":"2026-12-06T10:00:00.123456Z","data":{"source_event_id":"01938a2b-7c4d-7e8f-9a0b-1c2d3e4f5a6b","product_id":"p-1234","old":{"price":"49.99","stock":100},"new":{"price":"44.99","stock":100}}}',
               'bench'
        FROM generate_series(1, :n)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id)
SELECT array_agg(event_id)::text AS published FROM written \gset
COMMIT;
DELETE FROM outbox WHERE event_id = ANY (':published'::text[]);
