-- Articles and what hangs off them. Ids are UUIDv7 text, timestamps microseconds
-- since the epoch, flags 0/1 BIGINTs (the same SQL must read them on SQLite and
-- PostgreSQL). Authors are user-service account ids: no foreign key crosses
-- services.
CREATE TABLE article (
    id              TEXT PRIMARY KEY,
    slug            TEXT NOT NULL CONSTRAINT article_slug_key UNIQUE,
    author_id       TEXT NOT NULL,
    title           TEXT NOT NULL,
    description     TEXT NOT NULL,
    body            TEXT NOT NULL,
    published       BIGINT NOT NULL DEFAULT 1,
    -- kept in step with `favorite` in the same transaction, so lists need no COUNT
    favorites_count BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- the global list: published, newest first
CREATE INDEX article_published_created_idx ON article (published, created_at DESC, id DESC);
-- filter by author (and the author's drafts)
CREATE INDEX article_author_created_idx ON article (author_id, created_at DESC, id DESC);

CREATE TABLE article_tag (
    article_id TEXT NOT NULL REFERENCES article (id) ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    PRIMARY KEY (article_id, tag)
);

-- filter by tag
CREATE INDEX article_tag_tag_idx ON article_tag (tag, article_id);

CREATE TABLE favorite (
    user_id    TEXT NOT NULL,
    article_id TEXT NOT NULL REFERENCES article (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, article_id)
);

-- the primary key serves "favorited by"; this one serves deletes by article
CREATE INDEX favorite_article_idx ON favorite (article_id);

CREATE TABLE comment (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id TEXT NOT NULL REFERENCES article (id) ON DELETE CASCADE,
    author_id  TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX comment_article_idx ON comment (article_id, id);

-- Writes sent with an Idempotency-Key: a retry with the same key and request
-- answers with the resource the first one created, and creates nothing.
CREATE TABLE idempotency_key (
    user_id      TEXT NOT NULL,
    method       TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource_id  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id, method, key)
);
