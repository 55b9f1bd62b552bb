-- Conduit's `articlesCount` for the unfiltered list and for each tag, kept in
-- step by the transactions that publish or delete articles. Counting 100k rows
-- per request made the list slower as the site grew; reading one row does not.
-- Scope '' is every published article; 'tag:<tag>' those with that tag.
CREATE TABLE article_count (
    scope TEXT PRIMARY KEY,
    n     BIGINT NOT NULL
);

INSERT INTO article_count (scope, n)
SELECT '', COUNT(*) FROM article WHERE published = 1;

INSERT INTO article_count (scope, n)
SELECT 'tag:' || t.tag, COUNT(*)
FROM article_tag t JOIN article a ON a.id = t.article_id
WHERE a.published = 1
GROUP BY t.tag;
