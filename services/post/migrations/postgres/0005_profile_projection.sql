-- The post service's own copy of what it shows about people: public profiles
-- (user.registered / user.updated / user.deleted) and who follows whom
-- (user.followed / user.unfollowed), so rendering an article, a list or a
-- comment needs no call to the user service.
--
-- Events may arrive out of order (a retried delivery overtakes the next one):
-- every row keeps the id of the event that last wrote it (`version`, a UUIDv7,
-- so later events compare greater) and an older event never overwrites a newer
-- one. Deletions and unfollows are therefore kept as tombstones (`deleted = 1`,
-- `following = 0`) rather than removed rows. Rows filled from a direct call to
-- the user service carry version '' so that any event wins over them.
CREATE TABLE author (
    id       TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    bio      TEXT,
    image    TEXT,
    deleted  BIGINT NOT NULL DEFAULT 0,
    version  TEXT NOT NULL
);

-- `?author=` and `?favorited=` resolve usernames here
CREATE INDEX author_username_idx ON author (username);

CREATE TABLE follow (
    follower_id TEXT NOT NULL,
    followee_id TEXT NOT NULL,
    following   BIGINT NOT NULL,
    version     TEXT NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);
