-- The notification service's tables. Ids are UUIDv7 text (so they sort by
-- creation, which `Last-Event-ID` replay relies on), timestamps microseconds since
-- the epoch, flags 0/1 BIGINTs: the same SQL reads them on SQLite and PostgreSQL.
-- Users are user-service account ids; no foreign key crosses services.

-- The in-app feed. The actor's username is copied in at creation so a page needs
-- no lookup (and a later rename does not rewrite history).
CREATE TABLE notification (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    -- followed | article_published | commented | favorited
    kind           TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    actor_username TEXT NOT NULL,
    -- '' when the notification concerns no article
    article_slug   TEXT NOT NULL DEFAULT '',
    text           TEXT NOT NULL,
    read           BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL
);

-- one page of a user's feed, newest first
CREATE INDEX notification_user_created_idx ON notification (user_id, created_at DESC, id DESC);
-- the unread count and "mark all read" touch only unread rows
CREATE INDEX notification_unread_idx ON notification (user_id) WHERE read = 0;

-- Events already applied (see agora_kit::events::inbox).
CREATE TABLE inbox (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    handled_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Events to publish: `notification.created` for every replica's live streams
-- (see agora_kit::events::outbox).
CREATE TABLE outbox (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    envelope   BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);

-- the relay looks for unsent rows, oldest first
CREATE INDEX outbox_unsent_idx ON outbox (sent_at, created_at);

-- Projection of user-service accounts (user.registered/updated/deleted): actor
-- names for notification text, addresses for email.
CREATE TABLE account (
    user_id  TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    email    TEXT NOT NULL
);

-- Projection of follows (user.followed/unfollowed): a new article notifies every
-- follower of its author with one INSERT ... SELECT over this table.
CREATE TABLE follower (
    followee_id TEXT NOT NULL,
    follower_id TEXT NOT NULL,
    PRIMARY KEY (followee_id, follower_id)
);

-- deleting an account removes the follows it made, too
CREATE INDEX follower_follower_idx ON follower (follower_id);

-- Per-kind channel choices. A missing row means the defaults: in-app on, email off.
CREATE TABLE preference (
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    in_app  BIGINT NOT NULL,
    email   BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind)
);

-- Per-user quiet hours. A missing row means UTC and no quiet hours.
CREATE TABLE preference_schedule (
    user_id           TEXT PRIMARY KEY,
    -- IANA name (`Europe/Paris`), `UTC` or a fixed offset (`+02:00`)
    time_zone         TEXT NOT NULL,
    -- `HH:MM` local time; both NULL when there are no quiet hours
    quiet_hours_start TEXT,
    quiet_hours_end   TEXT
);

-- Outgoing email: a job queue with retries and a dead state.
CREATE TABLE email_job (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    -- welcome | notification | digest
    kind            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    -- deliveries tried so far
    attempts        BIGINT NOT NULL DEFAULT 0,
    -- not before this; also a claimed job's lease, so a crashed sender's job
    -- comes back by itself
    next_attempt_at BIGINT NOT NULL,
    -- ready | sent | dead
    status          TEXT NOT NULL DEFAULT 'ready',
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);

-- the worker's poll: due ready jobs
CREATE INDEX email_job_due_idx ON email_job (status, next_attempt_at);

-- One row per (user, digest period): the first replica to insert it sends that
-- digest; the others find the row and skip. `fired_at` bounds the next digest's
-- "since last time".
CREATE TABLE digest_run (
    user_id  TEXT NOT NULL,
    -- the schedule's firing time in UTC, e.g. `2026-11-24T09:00`
    period   TEXT NOT NULL,
    fired_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, period)
);
