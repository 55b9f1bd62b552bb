-- A session is one sign-in: a family of refresh tokens, each used once. Revoking
-- the session (logout, revoke, or reuse of a spent token) ends the whole family.
-- Timestamps are microseconds since the epoch.
CREATE TABLE session (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    user_agent   TEXT NOT NULL DEFAULT '',
    ip_address   TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);

-- "my sessions", newest first
CREATE INDEX session_user_idx ON session (user_id, created_at);

-- Refresh tokens are stored as SHA-256 hashes: a database leak yields nothing usable.
CREATE TABLE refresh_token (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES session (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE INDEX refresh_token_session_idx ON refresh_token (session_id);
