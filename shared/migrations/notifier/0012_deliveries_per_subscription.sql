-- The delivery worker claims due deliveries per subscription (at most a few in flight to one
-- endpoint), so it looks them up by subscription, earliest due first.
CREATE INDEX deliveries_due_per_subscription ON deliveries (subscription_id, next_attempt_at)
    WHERE status = 'pending';
