-- The trace state beside the trace context of the notifier's intake of each event, so that the
-- webhook deliveries made later carry a client's `tracestate` too.
ALTER TABLE notifications ADD COLUMN tracestate TEXT;
