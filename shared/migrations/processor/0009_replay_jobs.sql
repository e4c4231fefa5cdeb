-- A replay claims its dead letters before publishing them, so a second replay of the same
-- selection (a repeated click) finds nothing left to publish; a claim lapses after a while so a
-- replay cut short by a crash leaves its dead letters replayable again. A large replay runs as
-- a job whose progress can be followed.
ALTER TABLE dead_letters ADD COLUMN replay_job UUID;
ALTER TABLE dead_letters ADD COLUMN replay_claimed_until TIMESTAMPTZ;
CREATE INDEX dead_letters_replay_job ON dead_letters (replay_job) WHERE replay_job IS NOT NULL;

CREATE TABLE replay_jobs (
    id          UUID PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed     INTEGER NOT NULL,
    replayed    INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    finished_at TIMESTAMPTZ
);
