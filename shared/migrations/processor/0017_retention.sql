-- Retention: the processor prunes product updates' inbox rows and dead letters older than their
-- windows, oldest first, a batch at a time; these indexes find them without a scan.
CREATE INDEX processed_events_expiry ON processed_events (processed_at)
    WHERE kind = 'product.update';
CREATE INDEX dead_letters_expiry ON dead_letters (dead_lettered_at);
