-- Failed sign-ins per account (a hash of the email) and per client address, in a
-- fixed window, shared by every replica of the auth service. Keys are bounded
-- (a 64-character hash, an address of at most 64 characters); rows whose window
-- has ended are pruned.
CREATE TABLE login_failure (
    key          TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    failures     INTEGER NOT NULL
);

CREATE INDEX login_failure_window_idx ON login_failure (window_start);
