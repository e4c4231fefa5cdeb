-- The notifier: webhook subscriptions, the downstream events it took in, one delivery per
-- (event, subscription) and every attempt of each.
CREATE TABLE subscriptions (
    id                          UUID PRIMARY KEY,
    url                         TEXT NOT NULL,
    event_types                 TEXT[] NOT NULL,
    secret                      TEXT NOT NULL,
    -- Kept for a day after a rotation: deliveries are signed with both meanwhile.
    previous_secret             TEXT,
    previous_secret_expires_at  TIMESTAMPTZ,
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    consecutive_failures        INTEGER NOT NULL DEFAULT 0,
    disabled_at                 TIMESTAMPTZ,
    disabled_reason             TEXT,
    deleted_at                  TIMESTAMPTZ
);

-- Every downstream event the notifier took in, with or without subscribers; the body is kept
-- byte for byte, as it is signed and sent.
CREATE TABLE notifications (
    event_id     TEXT COLLATE "C" PRIMARY KEY,
    event_type   TEXT NOT NULL,
    body         TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One per (event, subscription): the unique key is what makes a redelivered event a no-op.
-- status: pending (due at next_attempt_at), sent, failed (dead-lettered after the last retry),
-- skipped (endpoint disabled when the event came), cancelled (subscription deleted).
CREATE TABLE deliveries (
    id               BIGSERIAL PRIMARY KEY,
    event_id         TEXT COLLATE "C" NOT NULL REFERENCES notifications (event_id),
    subscription_id  UUID NOT NULL REFERENCES subscriptions (id),
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed', 'skipped', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A worker holding the delivery: others leave it alone until the lease ends.
    lease_token      UUID,
    lease_until      TIMESTAMPTZ,
    last_error       TEXT,
    sent_at          TIMESTAMPTZ,
    failed_at        TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_failed ON deliveries (failed_at) WHERE status = 'failed';

CREATE TABLE delivery_attempts (
    id               BIGSERIAL PRIMARY KEY,
    delivery_id      BIGINT NOT NULL REFERENCES deliveries (id),
    attempted_at     TIMESTAMPTZ NOT NULL,
    status_code      INTEGER,
    latency_seconds  DOUBLE PRECISION NOT NULL,
    error            TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);
