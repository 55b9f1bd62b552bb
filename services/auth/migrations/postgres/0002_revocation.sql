-- Revocation reaches every replica (ADR 11). Sessions that end are announced on
-- the bus through the outbox; the auth service hears of deleted accounts and role
-- changes through its inbox, and answers ListRevocations from these tables.

CREATE TABLE outbox (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    envelope   BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);

CREATE INDEX outbox_unsent_idx ON outbox (sent_at, created_at);

CREATE TABLE inbox (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    handled_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- The latest role of each account whose role changed; rows older than the
-- longest access-token lifetime no longer matter and are pruned.
CREATE TABLE role_change (
    user_id    TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);

CREATE INDEX role_change_at_idx ON role_change (changed_at);

-- "sessions revoked lately", for ListRevocations
CREATE INDEX session_revoked_idx ON session (revoked_at);
