-- The schema compared against: today's, with migration 0023 undone (an outbox row per
-- downstream event, inserted with the change and deleted after the broker's confirm; the
-- processor's writes under it are before.batch.sql): the outbox as its migrations made it.
ALTER TABLE processed_events DROP COLUMN announcements;
\ir ../../shared/migrations/processor/0004_outbox.sql
\ir ../../shared/migrations/processor/0013_outbox_vacuum.sql
ALTER TABLE outbox ADD COLUMN source_kind TEXT NOT NULL,
    ADD COLUMN source_owner TEXT COLLATE "C" NOT NULL DEFAULT '',
    ALTER COLUMN payload TYPE text;
