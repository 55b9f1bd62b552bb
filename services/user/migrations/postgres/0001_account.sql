-- Accounts. Ids are UUIDv7 text (time-ordered, and portable between SQLite and
-- PostgreSQL); timestamps are microseconds since the epoch.
CREATE TABLE account (
    id            TEXT PRIMARY KEY,
    -- stored lower-cased, so uniqueness ignores case
    email         TEXT NOT NULL CONSTRAINT account_email_key UNIQUE,
    username      TEXT NOT NULL CONSTRAINT account_username_key UNIQUE,
    -- argon2id PHC string; never leaves this service
    password_hash TEXT NOT NULL,
    bio           TEXT,
    image         TEXT,
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'moderator', 'admin')),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- admin listing pages through accounts oldest first
CREATE INDEX account_created_idx ON account (created_at, id);

CREATE TABLE follow (
    follower_id TEXT NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    followee_id TEXT NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);

-- "who follows X" (fan-out to followers) reads by followee
CREATE INDEX follow_followee_idx ON follow (followee_id);
