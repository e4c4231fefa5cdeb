-- The queue each dead letter was consumed from, so that a replay sends it back there: a shard's
-- dead letter to its shard, the notifier's to the notifier.
ALTER TABLE dead_letters ADD COLUMN source_queue TEXT;
