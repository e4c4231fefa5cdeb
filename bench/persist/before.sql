-- The schema compared against: today's, with migration 0023 undone (an outbox row per
-- downstream event, inserted with the change and deleted after the broker's confirm; the
-- processor's writes under it are before.batch.sql).
ALTER TABLE processed_events DROP COLUMN announcements;
CREATE TABLE outbox (
    seq             BIGSERIAL,
    event_id        TEXT COLLATE "C" PRIMARY KEY,
    source_event_id TEXT COLLATE "C" NOT NULL,
    routing_key     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    source_kind     TEXT NOT NULL,
    source_owner    TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX outbox_source ON outbox (source_event_id);
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
