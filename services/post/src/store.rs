//! SQL for articles, tags, favorites, comments and idempotency keys, on SQLite and
//! PostgreSQL through sqlx's `Any` driver. Multi-row writes (an article and its
//! tags, a favorite and the count) commit in one transaction.

use std::collections::HashSet;

use agora_kit::db::{Backend, Db, now_micros, unique_violation};
use agora_kit::events::relay::Wake;
use agora_kit::events::{self, outbox, types};
use agora_proto::events::v1 as ev;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::domain;

/// A stored article with its tags.
#[derive(Debug, Clone)]
pub struct ArticleRow {
    pub id: String,
    pub slug: String,
    pub author_id: String,
    pub title: String,
    pub description: String,
    pub body: String,
    pub published: bool,
    pub favorites_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub tags: Vec<String>,
}

impl AsRef<ArticleRow> for ArticleRow {
    fn as_ref(&self) -> &ArticleRow {
        self
    }
}

impl ArticleRow {
    pub fn ownership(&self) -> domain::Ownership<'_> {
        domain::Ownership {
            author_id: &self.author_id,
        }
    }
}

/// A stored comment.
#[derive(Debug, Clone)]
pub struct CommentRow {
    pub id: i64,
    pub article_id: String,
    pub author_id: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An article to insert, validated.
#[derive(Debug)]
pub struct NewArticle {
    pub author_id: String,
    pub title: String,
    pub description: String,
    pub body: String,
    pub tags: Vec<String>,
    pub published: bool,
}

/// An idempotency key presented with a write.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub user_id: String,
    pub method: &'static str,
    pub key: String,
    /// Hash of the request, so the same key with another body is caught.
    pub request_hash: String,
}

/// What a write with an idempotency key found.
#[derive(Debug)]
pub enum Written<T> {
    /// The write happened now.
    New(T),
    /// The key was seen before with the same request: the id created then.
    Replayed(String),
    /// The key was seen before with a different request.
    Conflict,
}

/// Which articles a list wants.
#[derive(Debug, Default, Clone)]
pub struct ArticleFilter {
    pub tag: Option<String>,
    pub author_id: Option<String>,
    pub favorited_by: Option<String>,
    /// Feed: any of these authors.
    pub authors_in: Option<Vec<String>>,
}

impl ArticleFilter {
    /// The `article_count` row that holds this filter's total, when one is kept:
    /// `''` for all published articles, `tag:<tag>` per tag.
    pub fn kept_scope(&self) -> Option<String> {
        if self.author_id.is_some() || self.favorited_by.is_some() || self.authors_in.is_some() {
            return None;
        }
        Some(
            self.tag
                .as_ref()
                .map(|t| format!("tag:{t}"))
                .unwrap_or_default(),
        )
    }
}

/// The FROM and WHERE of the published articles a filter matches, with the values
/// its placeholders (`$1`, …) stand for.
struct Matching {
    from: String,
    conditions: String,
    values: Vec<String>,
}

impl Matching {
    /// `None` when nothing can match (a feed of nobody).
    fn of(filter: &ArticleFilter) -> Option<Self> {
        let mut from = String::from("FROM article a");
        let mut conditions = vec!["a.published = 1".to_owned()];
        let mut values: Vec<String> = Vec::new();
        if let Some(tag) = &filter.tag {
            values.push(tag.clone());
            from.push_str(&format!(
                " JOIN article_tag t ON t.article_id = a.id AND t.tag = ${}",
                values.len()
            ));
        }
        if let Some(user) = &filter.favorited_by {
            values.push(user.clone());
            from.push_str(&format!(
                " JOIN favorite f ON f.article_id = a.id AND f.user_id = ${}",
                values.len()
            ));
        }
        if let Some(author) = &filter.author_id {
            values.push(author.clone());
            conditions.push(format!("a.author_id = ${}", values.len()));
        }
        if let Some(authors) = &filter.authors_in {
            if authors.is_empty() {
                return None;
            }
            let first = values.len() + 1;
            values.extend(authors.iter().cloned());
            conditions.push(format!(
                "a.author_id IN ({})",
                agora_kit::db::placeholders(first, authors.len())
            ));
        }
        Some(Self {
            from,
            conditions: conditions.join(" AND "),
            values,
        })
    }
}

/// Changes to an article; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct ArticleChanges {
    pub slug: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    pub published: Option<bool>,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("slug taken")]
    SlugTaken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn slug_taken(err: sqlx::Error) -> StoreError {
    match unique_violation(&err) {
        Some(which) if which.contains("slug") => StoreError::SlugTaken,
        _ => StoreError::Db(err),
    }
}

const ARTICLE_COLUMNS: &str = "a.id, a.slug, a.author_id, a.title, a.description, a.body, \
     a.published, a.favorites_count, a.created_at, a.updated_at";

/// An article's tags as one column, sorted and joined by U+001F (tags never hold
/// control characters), so a page comes back as one row per article in one query.
fn tags_column(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "(SELECT string_agg(t.tag, chr(31) ORDER BY t.tag) \
             FROM article_tag t WHERE t.article_id = a.id) AS tags"
        }
        Backend::Sqlite => {
            "(SELECT group_concat(tag, char(31)) FROM \
             (SELECT t.tag FROM article_tag t WHERE t.article_id = a.id ORDER BY t.tag)) AS tags"
        }
    }
}

/// An article selected with its [`tags_column`].
fn tagged_article(row: &AnyRow) -> Result<ArticleRow, sqlx::Error> {
    let mut found = article(row)?;
    if let Some(tags) = row.try_get::<Option<String>, _>("tags")? {
        found.tags = tags.split('\u{1f}').map(str::to_owned).collect();
    }
    Ok(found)
}

fn article(row: &AnyRow) -> Result<ArticleRow, sqlx::Error> {
    Ok(ArticleRow {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        author_id: row.try_get("author_id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        body: row.try_get("body")?,
        published: row.try_get::<i64, _>("published")? != 0,
        favorites_count: row.try_get("favorites_count")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        tags: Vec::new(),
    })
}

fn comment(row: &AnyRow) -> Result<CommentRow, sqlx::Error> {
    Ok(CommentRow {
        id: row.try_get("id")?,
        article_id: row.try_get("article_id")?,
        author_id: row.try_get("author_id")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    /// Pokes the outbox relay after a commit that wrote events.
    wake: Wake,
}

/// The `producer` of this service's events.
const PRODUCER: &str = "post";

impl Store {
    pub fn new(db: Db, wake: Wake) -> Self {
        Self { db, wake }
    }

    /// Moves the published counts of the unfiltered list and of each tag by
    /// `delta`, inside the caller's transaction. Rows are touched in one order
    /// ('' first, then tags sorted) so concurrent writers never deadlock.
    async fn count_published(
        conn: &mut AnyConnection,
        tags: &[String],
        delta: i64,
    ) -> Result<(), sqlx::Error> {
        let mut scopes = vec![String::new()];
        let mut tag_scopes: Vec<String> = tags.iter().map(|t| format!("tag:{t}")).collect();
        tag_scopes.sort();
        scopes.extend(tag_scopes);
        for scope in scopes {
            sqlx::query(
                "INSERT INTO article_count (scope, n) VALUES ($1, $2) \
                 ON CONFLICT (scope) DO UPDATE SET n = article_count.n + excluded.n",
            )
            .bind(scope)
            .bind(delta)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Looks up an idempotency key outside any write.
    async fn replay(
        conn: &mut AnyConnection,
        key: &IdempotencyKey,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT request_hash, resource_id FROM idempotency_key \
             WHERE user_id = $1 AND method = $2 AND key = $3",
        )
        .bind(&key.user_id)
        .bind(key.method)
        .bind(&key.key)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    async fn check_key(
        &self,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Written<()>>, sqlx::Error> {
        let Some(key) = key else { return Ok(None) };
        let mut conn = self.db.pool().acquire().await?;
        Ok(match Self::replay(&mut conn, key).await? {
            Some((hash, id)) if hash == key.request_hash => Some(Written::Replayed(id)),
            Some(_) => Some(Written::Conflict),
            None => None,
        })
    }

    /// Records the key inside the write's transaction; false if a concurrent
    /// request with the same key got there first.
    async fn record_key(
        conn: &mut AnyConnection,
        key: &IdempotencyKey,
        resource_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO idempotency_key (user_id, method, key, request_hash, resource_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, method, key) DO NOTHING",
        )
        .bind(&key.user_id)
        .bind(key.method)
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(resource_id)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Inserts an article and its tags in one transaction. Equal titles created at
    /// the same moment both succeed: the loser of the slug race gets a suffix.
    #[tracing::instrument(skip_all, err)]
    pub async fn create_article(
        &self,
        new: &NewArticle,
        key: Option<&IdempotencyKey>,
    ) -> Result<Written<ArticleRow>, StoreError> {
        match self.check_key(key).await? {
            Some(Written::Replayed(id)) => return Ok(Written::Replayed(id)),
            Some(Written::Conflict) => return Ok(Written::Conflict),
            _ => {}
        }
        let base = domain::slug_base(&new.title);
        let mut slug = base.clone();
        for _ in 0..5 {
            match self.try_create(new, &slug, key).await {
                Err(StoreError::SlugTaken) => slug = domain::slug_with_suffix(&base),
                other => return other,
            }
        }
        Err(StoreError::SlugTaken)
    }

    async fn try_create(
        &self,
        new: &NewArticle,
        slug: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Written<ArticleRow>, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_micros();
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO article (id, slug, author_id, title, description, body, published, \
             favorites_count, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
        )
        .bind(&id)
        .bind(slug)
        .bind(&new.author_id)
        .bind(&new.title)
        .bind(&new.description)
        .bind(&new.body)
        .bind(i64::from(new.published))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(slug_taken)?;
        for tag in &new.tags {
            sqlx::query("INSERT INTO article_tag (article_id, tag) VALUES ($1, $2)")
                .bind(&id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        if new.published {
            Self::count_published(&mut tx, &new.tags, 1).await?;
            let event = events::envelope(
                types::ARTICLE_PUBLISHED,
                PRODUCER,
                &ev::ArticlePublished {
                    article_id: id.clone(),
                    slug: slug.to_owned(),
                    title: new.title.clone(),
                    author_id: new.author_id.clone(),
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        if let Some(key) = key
            && !Self::record_key(&mut tx, key, &id).await?
        {
            tx.rollback().await?;
            return Ok(self
                .check_key(Some(key))
                .await?
                .unwrap_or(Written::Conflict)
                .map_never());
        }
        outbox::commit(tx, &self.wake).await?;
        Ok(Written::New(ArticleRow {
            id,
            slug: slug.to_owned(),
            author_id: new.author_id.clone(),
            title: new.title.clone(),
            description: new.description.clone(),
            body: new.body.clone(),
            published: new.published,
            favorites_count: 0,
            created_at: now,
            updated_at: now,
            tags: new.tags.clone(),
        }))
    }

    /// An article by slug, with its tags.
    pub async fn article_by_slug(&self, slug: &str) -> Result<Option<ArticleRow>, sqlx::Error> {
        self.article_where("a.slug = $1", slug).await
    }

    /// An article by id, with its tags.
    pub async fn article_by_id(&self, id: &str) -> Result<Option<ArticleRow>, sqlx::Error> {
        self.article_where("a.id = $1", id).await
    }

    async fn article_where(
        &self,
        condition: &'static str,
        value: &str,
    ) -> Result<Option<ArticleRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {ARTICLE_COLUMNS}, {} FROM article a WHERE {condition}",
            tags_column(self.db.backend())
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(tagged_article)
            .transpose()
    }

    /// Applies changes; `None` when the article is gone.
    #[tracing::instrument(skip_all, err)]
    pub async fn update_article(
        &self,
        previous: &ArticleRow,
        changes: ArticleChanges,
    ) -> Result<Option<ArticleRow>, StoreError> {
        let id = previous.id.as_str();
        let mut sets = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        for (column, value) in [
            ("slug", changes.slug),
            ("title", changes.title),
            ("description", changes.description),
            ("body", changes.body),
        ] {
            if let Some(value) = value {
                texts.push(value);
                sets.push(format!("{column} = ${}", texts.len()));
            }
        }
        let mut n = texts.len();
        let published = changes.published.map(|p| {
            n += 1;
            sets.push(format!("published = ${n}"));
            i64::from(p)
        });
        let sql = format!(
            "UPDATE article SET {}updated_at = ${} WHERE id = ${}",
            sets.iter().map(|s| format!("{s}, ")).collect::<String>(),
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in texts {
            query = query.bind(value);
        }
        if let Some(published) = published {
            query = query.bind(published);
        }
        let mut tx = self.db.pool().begin().await?;
        let done = query
            .bind(now_micros())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(slug_taken)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ARTICLE_COLUMNS} FROM article a WHERE a.id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let mut updated = article(&row)?;
        updated.tags = previous.tags.clone();
        // Drafts make no noise; publishing one is its announcement.
        match (previous.published, updated.published) {
            (false, true) => Self::count_published(&mut tx, &updated.tags, 1).await?,
            (true, false) => Self::count_published(&mut tx, &updated.tags, -1).await?,
            _ => {}
        }
        let event = match (previous.published, updated.published) {
            (false, true) => Some(events::envelope(
                types::ARTICLE_PUBLISHED,
                PRODUCER,
                &ev::ArticlePublished {
                    article_id: updated.id.clone(),
                    slug: updated.slug.clone(),
                    title: updated.title.clone(),
                    author_id: updated.author_id.clone(),
                },
            )),
            (true, _) => Some(events::envelope(
                types::ARTICLE_UPDATED,
                PRODUCER,
                &ev::ArticleUpdated {
                    article_id: updated.id.clone(),
                    slug: updated.slug.clone(),
                    previous_slug: if previous.slug != updated.slug {
                        previous.slug.clone()
                    } else {
                        String::new()
                    },
                    title: updated.title.clone(),
                    author_id: updated.author_id.clone(),
                },
            )),
            (false, false) => None,
        };
        if let Some(event) = event {
            outbox::enqueue(&mut tx, &event).await?;
        }
        outbox::commit(tx, &self.wake).await?;
        Ok(Some(updated))
    }

    /// Deletes an article with its tags, favorites and comments.
    pub async fn delete_article(&self, doomed: &ArticleRow) -> Result<bool, sqlx::Error> {
        let id = doomed.id.as_str();
        let mut tx = self.db.pool().begin().await?;
        for sql in [
            "DELETE FROM article_tag WHERE article_id = $1",
            "DELETE FROM favorite WHERE article_id = $1",
            "DELETE FROM comment WHERE article_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM article WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 && doomed.published {
            Self::count_published(&mut tx, &doomed.tags, -1).await?;
            let event = events::envelope(
                types::ARTICLE_DELETED,
                PRODUCER,
                &ev::ArticleDeleted {
                    article_id: doomed.id.clone(),
                    slug: doomed.slug.clone(),
                    author_id: doomed.author_id.clone(),
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        outbox::commit(tx, &self.wake).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds a favorite and bumps the count in one transaction; twice is once.
    pub async fn favorite(&self, user_id: &str, target: &ArticleRow) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let added = sqlx::query(
            "INSERT INTO favorite (user_id, article_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, article_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(&target.id)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if added == 1 {
            sqlx::query("UPDATE article SET favorites_count = favorites_count + 1 WHERE id = $1")
                .bind(&target.id)
                .execute(&mut *tx)
                .await?;
            if target.published {
                let event = events::envelope(
                    types::ARTICLE_FAVORITED,
                    PRODUCER,
                    &ev::ArticleFavorited {
                        article_id: target.id.clone(),
                        slug: target.slug.clone(),
                        title: target.title.clone(),
                        user_id: user_id.to_owned(),
                        article_author_id: target.author_id.clone(),
                    },
                );
                outbox::enqueue(&mut tx, &event).await?;
            }
        }
        outbox::commit(tx, &self.wake).await
    }

    /// Removes a favorite and lowers the count in one transaction.
    pub async fn unfavorite(&self, user_id: &str, target: &ArticleRow) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let removed = sqlx::query("DELETE FROM favorite WHERE user_id = $1 AND article_id = $2")
            .bind(user_id)
            .bind(&target.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 1 {
            sqlx::query(
                "UPDATE article SET favorites_count = favorites_count - 1 \
                 WHERE id = $1 AND favorites_count > 0",
            )
            .bind(&target.id)
            .execute(&mut *tx)
            .await?;
            if target.published {
                let event = events::envelope(
                    types::ARTICLE_UNFAVORITED,
                    PRODUCER,
                    &ev::ArticleUnfavorited {
                        article_id: target.id.clone(),
                        slug: target.slug.clone(),
                        user_id: user_id.to_owned(),
                        article_author_id: target.author_id.clone(),
                    },
                );
                outbox::enqueue(&mut tx, &event).await?;
            }
        }
        outbox::commit(tx, &self.wake).await
    }

    /// One page of published articles, newest first, with their tags, in one query.
    #[tracing::instrument(skip_all, err)]
    pub async fn list_articles(
        &self,
        filter: &ArticleFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<ArticleRow>, sqlx::Error> {
        let Some(matching) = Matching::of(filter) else {
            return Ok(Vec::new());
        };
        let n = matching.values.len();
        let page_sql = format!(
            "SELECT {ARTICLE_COLUMNS}, {} {} WHERE {} \
             ORDER BY a.created_at DESC, a.id DESC LIMIT ${} OFFSET ${}",
            tags_column(self.db.backend()),
            matching.from,
            matching.conditions,
            n + 1,
            n + 2
        );
        let mut page = sqlx::query(AssertSqlSafe(page_sql));
        for v in &matching.values {
            page = page.bind(v);
        }
        let rows = page
            .bind(limit)
            .bind(offset)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(tagged_article).collect()
    }

    /// How many published articles match `filter` in all: one kept row for the
    /// unfiltered and per-tag lists ([`ArticleFilter::kept_scope`]), a count over
    /// the (small, indexed) matching set otherwise.
    #[tracing::instrument(skip_all, err)]
    pub async fn count_articles(&self, filter: &ArticleFilter) -> Result<i64, sqlx::Error> {
        if let Some(scope) = filter.kept_scope() {
            return sqlx::query("SELECT n FROM article_count WHERE scope = $1")
                .bind(scope)
                .fetch_optional(self.db.pool())
                .await?
                .map(|row| row.try_get(0))
                .transpose()
                .map(Option::unwrap_or_default);
        }
        let Some(matching) = Matching::of(filter) else {
            return Ok(0);
        };
        let count_sql = format!(
            "SELECT COUNT(*) FROM (SELECT a.id {} WHERE {}) n",
            matching.from, matching.conditions
        );
        let mut count = sqlx::query(AssertSqlSafe(count_sql));
        for v in &matching.values {
            count = count.bind(v);
        }
        count.fetch_one(self.db.pool()).await?.try_get(0)
    }

    /// Which of `ids` `user_id` has favorited, in one query.
    pub async fn favorited_among(
        &self,
        user_id: &str,
        ids: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let found = agora_kit::db::strings_in(
            self.db.pool(),
            "SELECT article_id FROM favorite WHERE user_id = $1 AND article_id IN ({ids})",
            &[user_id],
            ids,
        )
        .await?;
        Ok(found.into_iter().collect())
    }

    /// Every tag on a published article, most used first.
    pub async fn all_tags(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query(
            "SELECT scope FROM article_count WHERE scope LIKE 'tag:%' AND n > 0 \
             ORDER BY n DESC, scope LIMIT 1000",
        )
        .fetch_all(self.db.pool())
        .await?
        .iter()
        .map(|row| {
            let scope: String = row.try_get(0)?;
            Ok(scope.strip_prefix("tag:").unwrap_or(&scope).to_owned())
        })
        .collect()
    }

    /// Adds a comment, honouring an idempotency key.
    pub async fn add_comment(
        &self,
        target: &ArticleRow,
        author_id: &str,
        body: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Written<CommentRow>, sqlx::Error> {
        match self.check_key(key).await? {
            Some(Written::Replayed(id)) => return Ok(Written::Replayed(id)),
            Some(Written::Conflict) => return Ok(Written::Conflict),
            _ => {}
        }
        let article_id = target.id.as_str();
        let now = now_micros();
        let mut tx = self.db.pool().begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO comment (article_id, author_id, body, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) RETURNING id",
        )
        .bind(article_id)
        .bind(author_id)
        .bind(body)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if target.published {
            let event = events::envelope(
                types::COMMENT_ADDED,
                PRODUCER,
                &ev::CommentAdded {
                    comment_id: id,
                    article_id: target.id.clone(),
                    slug: target.slug.clone(),
                    title: target.title.clone(),
                    author_id: author_id.to_owned(),
                    article_author_id: target.author_id.clone(),
                    body: body.to_owned(),
                    created_at: Some(agora_kit::db::timestamp(now)),
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        if let Some(key) = key
            && !Self::record_key(&mut tx, key, &id.to_string()).await?
        {
            tx.rollback().await?;
            return Ok(self
                .check_key(Some(key))
                .await?
                .unwrap_or(Written::Conflict)
                .map_never());
        }
        outbox::commit(tx, &self.wake).await?;
        Ok(Written::New(CommentRow {
            id,
            article_id: article_id.to_owned(),
            author_id: author_id.to_owned(),
            body: body.to_owned(),
            created_at: now,
            updated_at: now,
        }))
    }

    /// An article's comments, oldest first (at most 500).
    pub async fn comments(&self, article_id: &str) -> Result<Vec<CommentRow>, sqlx::Error> {
        sqlx::query(
            "SELECT id, article_id, author_id, body, created_at, updated_at FROM comment \
             WHERE article_id = $1 ORDER BY id LIMIT 500",
        )
        .bind(article_id)
        .fetch_all(self.db.pool())
        .await?
        .iter()
        .map(comment)
        .collect()
    }

    pub async fn comment(&self, id: i64) -> Result<Option<CommentRow>, sqlx::Error> {
        sqlx::query(
            "SELECT id, article_id, author_id, body, created_at, updated_at FROM comment WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .as_ref()
        .map(comment)
        .transpose()
    }

    pub async fn delete_comment(&self, id: i64, target: &ArticleRow) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query("DELETE FROM comment WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 && target.published {
            let event = events::envelope(
                types::COMMENT_DELETED,
                PRODUCER,
                &ev::CommentDeleted {
                    comment_id: id,
                    article_id: target.id.clone(),
                    slug: target.slug.clone(),
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        outbox::commit(tx, &self.wake).await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Removes everything of a deleted account in one transaction, once per
    /// event: its articles (with their tags, favorites and comments), its
    /// comments elsewhere and its favorites, keeping counts in step and announcing
    /// each deleted article and comment. False when the event was handled before.
    #[tracing::instrument(skip_all, err)]
    pub async fn forget_account(
        &self,
        consumer: &str,
        event_id: &str,
        user_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        if !events::inbox::claim(&mut tx, consumer, event_id).await? {
            return Ok(false);
        }
        let own: Vec<(String, String, bool)> =
            sqlx::query("SELECT id, slug, published FROM article WHERE author_id = $1")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| {
                    Ok((
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get::<i64, _>(2)? != 0,
                    ))
                })
                .collect::<Result<_, sqlx::Error>>()?;
        for (id, slug, published) in &own {
            if !published {
                continue;
            }
            let tags: Vec<String> =
                sqlx::query("SELECT tag FROM article_tag WHERE article_id = $1")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<_, _>>()?;
            Self::count_published(&mut tx, &tags, -1).await?;
            let event = events::envelope(
                types::ARTICLE_DELETED,
                PRODUCER,
                &ev::ArticleDeleted {
                    article_id: id.clone(),
                    slug: slug.clone(),
                    author_id: user_id.to_owned(),
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        for sql in [
            "DELETE FROM article_tag WHERE article_id IN (SELECT id FROM article WHERE author_id = $1)",
            "DELETE FROM favorite WHERE article_id IN (SELECT id FROM article WHERE author_id = $1)",
            "DELETE FROM comment WHERE article_id IN (SELECT id FROM article WHERE author_id = $1)",
            "DELETE FROM article WHERE author_id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(&mut *tx).await?;
        }
        let comments = sqlx::query(
            "SELECT c.id, c.article_id, a.slug, a.published FROM comment c \
             JOIN article a ON a.id = c.article_id WHERE c.author_id = $1",
        )
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        for row in &comments {
            if row.try_get::<i64, _>(3)? == 0 {
                continue;
            }
            let event = events::envelope(
                types::COMMENT_DELETED,
                PRODUCER,
                &ev::CommentDeleted {
                    comment_id: row.try_get(0)?,
                    article_id: row.try_get(1)?,
                    slug: row.try_get(2)?,
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        sqlx::query("DELETE FROM comment WHERE author_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        // Announced so every replica drops the cached counts.
        let favorites = sqlx::query(
            "SELECT a.id, a.slug, a.author_id FROM favorite f \
             JOIN article a ON a.id = f.article_id WHERE f.user_id = $1 AND a.published = 1",
        )
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        for row in &favorites {
            let event = events::envelope(
                types::ARTICLE_UNFAVORITED,
                PRODUCER,
                &ev::ArticleUnfavorited {
                    article_id: row.try_get(0)?,
                    slug: row.try_get(1)?,
                    user_id: user_id.to_owned(),
                    article_author_id: row.try_get(2)?,
                },
            );
            outbox::enqueue(&mut tx, &event).await?;
        }
        sqlx::query(
            "UPDATE article SET favorites_count = favorites_count - 1 \
             WHERE favorites_count > 0 AND id IN (SELECT article_id FROM favorite WHERE user_id = $1)",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM favorite WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        outbox::commit(tx, &self.wake).await?;
        tracing::info!(%user_id, articles = own.len(), comments = comments.len(), "deleted account's content removed");
        Ok(true)
    }
}

impl Written<()> {
    /// A replay or conflict found by a key check, as the caller's result type.
    fn map_never<T>(self) -> Written<T> {
        match self {
            Written::Replayed(id) => Written::Replayed(id),
            Written::Conflict | Written::New(()) => Written::Conflict,
        }
    }
}
