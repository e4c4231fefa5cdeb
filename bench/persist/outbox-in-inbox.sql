-- An experiment (issue 32's "outbox churn"): no outbox rows. Each inbox row carries the
-- announcement its event caused, and a row per shard records up to when the broker confirmed the
-- shard's announcements; after a crash, what the shard applied since is published again (the
-- announcements' ids are stable, and consumers drop an id they have seen). Per event this saves
-- the outbox row's insert, its two index entries and its delete, and costs a wider inbox row;
-- per batch it adds one update.
ALTER TABLE processed_events ADD COLUMN announcement text;
CREATE TABLE published_upto (shard integer PRIMARY KEY, upto timestamptz NOT NULL);
INSERT INTO published_upto SELECT shard, now() FROM generate_series(0, 3) AS shard;
