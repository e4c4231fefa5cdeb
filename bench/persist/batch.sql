-- One batch of 16 product updates as the processor writes it (pgbench script; the statements of
-- processor::store::apply, their inputs made up): the products' rows locked, the inbox read for
-- the batch's events, then the inbox rows, each with the product.updated announcement it caused,
-- and the products' rows saved, in one transaction.
\set n 16
BEGIN;
SELECT product_id, price, price_occurred_at, price_event_id, stock, stock_occurred_at,
       stock_event_id, updated_at
    FROM products
    WHERE product_id = ANY (ARRAY(SELECT 'p-' || (random() * 10000)::int FROM generate_series(1, :n)))
    ORDER BY product_id FOR UPDATE;
SELECT e.kind, e.owner, e.event_id
    FROM (SELECT gen_random_uuid()::text AS event_id, 'product.update' AS kind, 'bench' AS owner
          FROM generate_series(1, :n)) e
    WHERE EXISTS (
        SELECT 1 FROM processed_events p
        WHERE p.event_id = e.event_id AND p.kind = e.kind AND p.owner IN (e.owner, ''));
INSERT INTO processed_events (event_id, kind, product_id, occurred_at, received_at, owner,
                              announcements)
    SELECT gen_random_uuid()::text, 'product.update', 'p-' || (random() * 10000)::int, now(),
           now(), 'bench',
           ARRAY['{"type":"product.updated","timestamp":"2026-12-06T10:00:00.123456Z","data":{"source_event_id":"01938a2b-7c4d-7e8f-9a0b-1c2d3e4f5a6b","product_id":"p-1234","old":{"price":"49.99","stock":100},"new":{"price":"44.99","stock":100}}}']
    FROM generate_series(1, :n)
    ON CONFLICT (event_id, kind, owner) DO NOTHING;
INSERT INTO products AS p (product_id, price, price_occurred_at, price_event_id)
    SELECT DISTINCT ON (id) id, 10 + (random() * 90)::numeric(10, 2), now(), gen_random_uuid()::text
    FROM (SELECT 'p-' || (random() * 10000)::int AS id FROM generate_series(1, :n)) ids
    ON CONFLICT (product_id) DO UPDATE SET price = excluded.price,
        price_occurred_at = excluded.price_occurred_at, price_event_id = excluded.price_event_id,
        updated_at = now()
    RETURNING p.product_id, p.updated_at;
COMMIT;
