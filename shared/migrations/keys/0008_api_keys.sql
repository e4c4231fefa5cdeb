-- API keys: each a random secret shown once at creation and kept here only as its SHA-256.
-- A name is unique among the keys not revoked; a revoked key stays listed with when it was
-- revoked.
CREATE TABLE api_keys (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL,
    hash             BYTEA NOT NULL UNIQUE,
    scopes           TEXT[] NOT NULL,
    rate_per_second  INTEGER CHECK (rate_per_second > 0),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at     TIMESTAMPTZ,
    revoked_at       TIMESTAMPTZ
);
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
