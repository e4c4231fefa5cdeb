-- The schema compared against: today's, with migration 0022 undone (the outbox's payload as
-- jsonb, the inbox's expiry index a B-tree).
ALTER TABLE outbox ALTER COLUMN payload TYPE jsonb USING payload::jsonb;
DROP INDEX processed_events_expiry;
CREATE INDEX processed_events_expiry ON processed_events (processed_at)
    WHERE kind = 'product.update';
