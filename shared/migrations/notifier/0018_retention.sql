-- Retention: the notifier prunes notifications (with their deliveries and attempts) older than
-- their window once none is pending; this index finds them without a scan.
CREATE INDEX notifications_expiry ON notifications (received_at);
