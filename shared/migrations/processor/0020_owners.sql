-- Identifiers live in the space of the API key that sent them: an event's identity is its kind,
-- its owner (the key's name) and its id; an order's, the key that placed it and its id. Rows
-- from before have the owner '' (one space shared by every key) and keep meaning what they
-- meant: an event id applied then is a duplicate for every key (the inbox checks it), an order
-- placed then stays readable by id.
ALTER TABLE processed_events ADD COLUMN owner TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE processed_events DROP CONSTRAINT processed_events_pkey;
ALTER TABLE processed_events ADD PRIMARY KEY (event_id, kind, owner);

ALTER TABLE orders ADD COLUMN placed_by TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE orders DROP CONSTRAINT orders_pkey;
ALTER TABLE orders ADD PRIMARY KEY (placed_by, order_id);
CREATE INDEX orders_by_id ON orders (order_id);

ALTER TABLE outbox ADD COLUMN source_owner TEXT COLLATE "C" NOT NULL DEFAULT '';

-- Whose event a dead letter holds (the body's owner; NULL for earlier ones and for bodies that
-- could not be read), so "already applied" looks in the right space.
ALTER TABLE dead_letters ADD COLUMN owner TEXT COLLATE "C";
