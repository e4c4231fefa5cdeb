-- Shard ownership among processor replicas: who is alive, and who owns each shard until when.
-- `epoch` grows with every claim; a batch commits only while its shard's epoch is the one it
-- was claimed with (checked under a share lock in the apply transaction), so a replica that
-- lost a shard cannot commit a late batch for it.
CREATE TABLE processor_members (
    member     text PRIMARY KEY,
    joined_at  timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shard_leases (
    shard       integer PRIMARY KEY CHECK (shard >= 0),
    owner       text,
    epoch       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    claimed_at  timestamptz
);
