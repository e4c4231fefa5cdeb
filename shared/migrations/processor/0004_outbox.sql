-- Downstream events written with the change that caused them, published after the commit and
-- deleted once the broker confirmed them. What is here was not yet confirmed.
CREATE TABLE outbox (
    seq             BIGSERIAL,
    event_id        TEXT COLLATE "C" PRIMARY KEY,
    source_event_id TEXT COLLATE "C" NOT NULL,
    routing_key     TEXT NOT NULL,
    payload         JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX outbox_source ON outbox (source_event_id);
