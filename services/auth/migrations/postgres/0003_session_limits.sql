-- Sessions end at an absolute time however often they are refreshed; rows from
-- before this migration get thirty days from their start.
ALTER TABLE session ADD COLUMN absolute_expires_at BIGINT;
UPDATE session SET absolute_expires_at = created_at + 2592000000000;

-- Concurrent refresh (two tabs): a spent token keeps its successor, sealed with a
-- key only the spent token's holder can derive, so a second use within a few
-- seconds gets the same successor instead of revoking the session.
ALTER TABLE refresh_token ADD COLUMN successor_hash TEXT;
ALTER TABLE refresh_token ADD COLUMN successor_sealed TEXT;

-- pruning ended sessions
CREATE INDEX session_expires_idx ON session (expires_at);
