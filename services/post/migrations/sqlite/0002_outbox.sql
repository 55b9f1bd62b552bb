-- Events this service publishes, written in the same transaction as the change
-- that caused them; the relay publishes and marks them sent.
CREATE TABLE outbox (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    envelope   BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);

CREATE INDEX outbox_unsent_idx ON outbox (sent_at, created_at);
