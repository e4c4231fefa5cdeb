-- The trace a dead letter belongs to, from its `traceparent` header, so an operator can go from
-- the dead letter to the trace of what happened.
ALTER TABLE dead_letters ADD COLUMN trace_id TEXT;

-- Events on the retry ladder: the last retry scheduled for each, so an operator looking an
-- event up sees that it is waiting for another attempt, and why.
CREATE TABLE retries (
    event_id    TEXT COLLATE "C" PRIMARY KEY,
    attempts    INTEGER NOT NULL,
    last_error  TEXT NOT NULL,
    retry_at    TIMESTAMPTZ NOT NULL
);
