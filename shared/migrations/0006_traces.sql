-- The trace context of the notifier's intake of each event, so that its webhook deliveries,
-- made later by any notifier, join the event's trace.
ALTER TABLE notifications ADD COLUMN traceparent TEXT;

-- The trace a dead letter belongs to, from its `traceparent` header, so an operator can go from
-- the dead letter to the trace of what happened.
ALTER TABLE dead_letters ADD COLUMN trace_id TEXT;
