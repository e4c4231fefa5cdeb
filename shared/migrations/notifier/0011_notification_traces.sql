-- The trace context of the notifier's intake of each event, so that its webhook deliveries,
-- made later by any notifier, join the event's trace. (First written in version 6 together
-- with the processor's changes; a database that applied that version has the column already.)
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS traceparent TEXT;
