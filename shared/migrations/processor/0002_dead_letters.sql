-- Dead letters, taken off the dead-letter queue so an operator can list, filter, inspect,
-- replay and purge them. A row is removed once its message has been replayed (confirmed back
-- into the pipeline) or purged.
CREATE TABLE dead_letters (
    id               TEXT COLLATE "C" PRIMARY KEY,
    event_id         TEXT,
    product_id       TEXT,
    reason           TEXT NOT NULL,
    error            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    service          TEXT NOT NULL,
    routing_key      TEXT NOT NULL,
    message_type     TEXT,
    first_failed_at  TIMESTAMPTZ NOT NULL,
    dead_lettered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload          BYTEA NOT NULL
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, first_failed_at);
CREATE INDEX dead_letters_product ON dead_letters (product_id, first_failed_at);
