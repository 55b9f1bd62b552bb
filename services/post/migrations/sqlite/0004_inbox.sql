-- Events this service has applied (it consumes `user.deleted`), claimed in the
-- same transaction as their effect so a redelivery changes nothing.
CREATE TABLE inbox (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    handled_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
