//! SQL for the feed, preferences and the user projections, on SQLite and
//! PostgreSQL through sqlx's `Any` driver. Reads for the API go through [`Store`];
//! writes caused by events are free functions over the caller's transaction, so
//! the event handler commits them together with its inbox claim. The email queue's
//! SQL lives with the worker in `email::queue`.

use agora_kit::db::{Backend, Db, now_micros};
use agora_proto::notification::v1 as pb;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::domain::{Channels, EmailKind, Kind, Preferences, Schedule};

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: String,
    pub user_id: String,
    pub kind: Kind,
    pub actor_id: String,
    pub actor_username: String,
    pub article_slug: String,
    pub text: String,
    pub read: bool,
    pub created_at: i64,
}

impl NotificationRow {
    pub fn to_proto(&self) -> pb::Notification {
        pb::Notification {
            id: self.id.clone(),
            kind: self.kind.to_proto().into(),
            actor: self.actor_username.clone(),
            article_slug: self.article_slug.clone(),
            text: self.text.clone(),
            read: self.read,
            created_at: Some(agora_kit::db::timestamp(self.created_at)),
        }
    }
}

const NOTIFICATION_COLUMNS: &str =
    "id, user_id, kind, actor_id, actor_username, article_slug, text, read, created_at";

fn notification(row: &AnyRow) -> Result<NotificationRow, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(NotificationRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        kind: Kind::parse(&kind).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "kind".into(),
            source: format!("unknown notification kind `{kind}`").into(),
        })?,
        actor_id: row.try_get("actor_id")?,
        actor_username: row.try_get("actor_username")?,
        article_slug: row.try_get("article_slug")?,
        text: row.try_get("text")?,
        read: row.try_get::<i64, _>("read")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// Reads and writes the API needs.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// One page of `user_id`'s feed, newest first, and how many are unread in all.
    pub async fn page(
        &self,
        user_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<NotificationRow>, i64), sqlx::Error> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notification WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(notification)
            .collect::<Result<Vec<_>, _>>()?;
        let unread: i64 =
            sqlx::query("SELECT COUNT(*) FROM notification WHERE user_id = $1 AND read = 0")
                .bind(user_id)
                .fetch_one(self.db.pool())
                .await?
                .try_get(0)?;
        Ok((rows, unread))
    }

    /// `user_id`'s notifications created after `after_id`, oldest first: what a
    /// reconnecting stream missed. Ids are UUIDv7, so text order is creation order.
    pub async fn after(
        &self,
        user_id: &str,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notification WHERE user_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(after_id)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(notification)
            .collect()
    }

    /// Marks `ids` (all when empty) read, among `user_id`'s own; how many changed.
    pub async fn mark_read(&self, user_id: &str, ids: &[String]) -> Result<u64, sqlx::Error> {
        if ids.is_empty() {
            let done =
                sqlx::query("UPDATE notification SET read = 1 WHERE user_id = $1 AND read = 0")
                    .bind(user_id)
                    .execute(self.db.pool())
                    .await?;
            return Ok(done.rows_affected());
        }
        let sql = format!(
            "UPDATE notification SET read = 1 WHERE user_id = $1 AND read = 0 AND id IN ({})",
            agora_kit::db::placeholders(2, ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(user_id);
        for id in ids {
            query = query.bind(id);
        }
        Ok(query.execute(self.db.pool()).await?.rows_affected())
    }

    /// `user_id`'s preferences, defaults filled in.
    pub async fn preferences(&self, user_id: &str) -> Result<Preferences, sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        let rows = sqlx::query("SELECT kind, in_app, email FROM preference WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&mut *conn)
            .await?;
        let mut kinds: Vec<(Kind, Channels)> = Kind::ALL
            .iter()
            .map(|k| (*k, Channels::default()))
            .collect();
        for row in rows {
            let kind: String = row.try_get(0)?;
            if let Some(slot) = kinds.iter_mut().find(|(k, _)| k.as_str() == kind) {
                slot.1 = Channels {
                    in_app: row.try_get::<i64, _>(1)? != 0,
                    email: row.try_get::<i64, _>(2)? != 0,
                };
            }
        }
        let schedule = schedule(&mut conn, user_id).await?;
        Ok(Preferences { kinds, schedule })
    }

    /// Replaces `user_id`'s preferences in one transaction.
    pub async fn replace_preferences(
        &self,
        user_id: &str,
        prefs: &Preferences,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM preference WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for (kind, channels) in &prefs.kinds {
            sqlx::query(
                "INSERT INTO preference (user_id, kind, in_app, email) VALUES ($1, $2, $3, $4)",
            )
            .bind(user_id)
            .bind(kind.as_str())
            .bind(i64::from(channels.in_app))
            .bind(i64::from(channels.email))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM preference_schedule WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let quiet = prefs.schedule.quiet;
        let hh_mm = |t: jiff::civil::Time| format!("{:02}:{:02}", t.hour(), t.minute());
        sqlx::query(
            "INSERT INTO preference_schedule (user_id, time_zone, quiet_hours_start, \
             quiet_hours_end) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(&prefs.schedule.zone.name)
        .bind(quiet.map(|q| hh_mm(q.start)))
        .bind(quiet.map(|q| hh_mm(q.end)))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

// ---- writes and lookups inside an event's transaction ----

/// Creates or refreshes an account in the projection.
pub async fn upsert_account(
    conn: &mut AnyConnection,
    user_id: &str,
    username: &str,
    email: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO account (user_id, username, email) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET username = excluded.username, email = excluded.email",
    )
    .bind(user_id)
    .bind(username)
    .bind(email)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a deleted account: its projection rows, follows both ways, preferences,
/// feed and the email still waiting for it.
pub async fn delete_user(conn: &mut AnyConnection, user_id: &str) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM account WHERE user_id = $1",
        "DELETE FROM follower WHERE followee_id = $1 OR follower_id = $1",
        "DELETE FROM preference WHERE user_id = $1",
        "DELETE FROM preference_schedule WHERE user_id = $1",
        "DELETE FROM notification WHERE user_id = $1",
        "DELETE FROM email_job WHERE user_id = $1 AND status = 'ready'",
    ] {
        sqlx::query(sql).bind(user_id).execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn add_follower(
    conn: &mut AnyConnection,
    followee_id: &str,
    follower_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO follower (followee_id, follower_id) VALUES ($1, $2) \
         ON CONFLICT (followee_id, follower_id) DO NOTHING",
    )
    .bind(followee_id)
    .bind(follower_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn remove_follower(
    conn: &mut AnyConnection,
    followee_id: &str,
    follower_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM follower WHERE followee_id = $1 AND follower_id = $2")
        .bind(followee_id)
        .bind(follower_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The username of an account in the projection.
pub async fn username(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT username FROM account WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?
        .map(|row| row.try_get(0))
        .transpose()
}

/// Where `user_id` wants `kind` delivered.
pub async fn channels(
    conn: &mut AnyConnection,
    user_id: &str,
    kind: Kind,
) -> Result<Channels, sqlx::Error> {
    let row = sqlx::query("SELECT in_app, email FROM preference WHERE user_id = $1 AND kind = $2")
        .bind(user_id)
        .bind(kind.as_str())
        .fetch_optional(conn)
        .await?;
    match row {
        None => Ok(Channels::default()),
        Some(row) => Ok(Channels {
            in_app: row.try_get::<i64, _>(0)? != 0,
            email: row.try_get::<i64, _>(1)? != 0,
        }),
    }
}

/// `user_id`'s time zone and quiet hours.
pub async fn schedule(conn: &mut AnyConnection, user_id: &str) -> Result<Schedule, sqlx::Error> {
    let row = sqlx::query(
        "SELECT time_zone, quiet_hours_start, quiet_hours_end FROM preference_schedule \
         WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    match row {
        None => Ok(Schedule::default()),
        Some(row) => {
            let zone: String = row.try_get(0)?;
            let start: Option<String> = row.try_get(1)?;
            let end: Option<String> = row.try_get(2)?;
            Ok(Schedule::from_stored(
                &zone,
                start.as_deref(),
                end.as_deref(),
            ))
        }
    }
}

/// What a notification says, before it has an id and a recipient.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub kind: Kind,
    pub actor_id: &'a str,
    pub actor_username: &'a str,
    pub article_slug: &'a str,
    pub text: &'a str,
    pub created_at: i64,
}

impl NewNotification<'_> {
    fn row(&self, id: String, user_id: String) -> NotificationRow {
        NotificationRow {
            id,
            user_id,
            kind: self.kind,
            actor_id: self.actor_id.to_owned(),
            actor_username: self.actor_username.to_owned(),
            article_slug: self.article_slug.to_owned(),
            text: self.text.to_owned(),
            read: false,
            created_at: self.created_at,
        }
    }
}

/// Stores one notification for `user_id`.
pub async fn insert_notification(
    conn: &mut AnyConnection,
    user_id: &str,
    new: &NewNotification<'_>,
) -> Result<NotificationRow, sqlx::Error> {
    let row = new.row(uuid::Uuid::now_v7().to_string(), user_id.to_owned());
    sqlx::query(
        "INSERT INTO notification (id, user_id, kind, actor_id, actor_username, article_slug, \
         text, read, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
    )
    .bind(&row.id)
    .bind(&row.user_id)
    .bind(row.kind.as_str())
    .bind(&row.actor_id)
    .bind(&row.actor_username)
    .bind(&row.article_slug)
    .bind(&row.text)
    .bind(row.created_at)
    .execute(conn)
    .await?;
    Ok(row)
}

/// Notifies every follower of `new.actor_id` who has `new.kind` in the app, in one
/// `INSERT … SELECT` over the follower projection however many followers there
/// are; returns the rows it created.
///
/// Each row needs its own UUIDv7 id, which neither engine can mint in SQL (before
/// PostgreSQL 18): the ids share the first 30 characters of one UUIDv7 made here
/// (the millisecond and 50 random bits) and end in the row's number as 6 hex
/// digits — still valid, time-ordered UUIDv7s, unique within the batch, and
/// across batches as surely as 50 random bits make them.
pub async fn fan_out_to_followers(
    conn: &mut AnyConnection,
    backend: Backend,
    new: &NewNotification<'_>,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    let base = batch_id_base();
    let prefix = &base[..30];
    let row_number = "ROW_NUMBER() OVER (ORDER BY f.follower_id)";
    let id = match backend {
        Backend::Sqlite => format!("$1 || printf('%06x', {row_number})"),
        Backend::Postgres => format!("$1 || lpad(to_hex({row_number}), 6, '0')"),
    };
    let sql = format!(
        "INSERT INTO notification (id, user_id, kind, actor_id, actor_username, article_slug, \
         text, read, created_at) \
         SELECT {id}, f.follower_id, $2, $3, $4, $5, $6, 0, $7 FROM follower f \
         WHERE f.followee_id = $3 AND f.follower_id <> $3 \
         AND NOT EXISTS (SELECT 1 FROM preference p WHERE p.user_id = f.follower_id \
         AND p.kind = $2 AND p.in_app = 0) \
         RETURNING id, user_id"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(prefix)
        .bind(new.kind.as_str())
        .bind(new.actor_id)
        .bind(new.actor_username)
        .bind(new.article_slug)
        .bind(new.text)
        .bind(new.created_at)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok(new.row(r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// A UUIDv7 whose bits after the timestamp are all random. `Uuid::now_v7` would
/// not do: within one millisecond it counts up in the low bits, so two batches
/// would share a prefix.
fn batch_id_base() -> String {
    let millis = u64::try_from(now_micros() / 1_000).unwrap_or_default();
    let random = uuid::Uuid::new_v4().into_bytes();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&random[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &bytes)
        .into_uuid()
        .to_string()
}

/// The followers of `followee_id` who want `kind` by email, with their schedules.
pub async fn email_followers(
    conn: &mut AnyConnection,
    followee_id: &str,
    kind: Kind,
) -> Result<Vec<(String, Schedule)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT f.follower_id, s.time_zone, s.quiet_hours_start, s.quiet_hours_end \
         FROM follower f \
         JOIN preference p ON p.user_id = f.follower_id AND p.kind = $2 AND p.email = 1 \
         LEFT JOIN preference_schedule s ON s.user_id = f.follower_id \
         WHERE f.followee_id = $1 AND f.follower_id <> $1",
    )
    .bind(followee_id)
    .bind(kind.as_str())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let user: String = row.try_get(0)?;
            let zone: Option<String> = row.try_get(1)?;
            let start: Option<String> = row.try_get(2)?;
            let end: Option<String> = row.try_get(3)?;
            let schedule = match zone {
                Some(zone) => Schedule::from_stored(&zone, start.as_deref(), end.as_deref()),
                None => Schedule::default(),
            };
            Ok((user, schedule))
        })
        .collect()
}

/// An email to queue.
#[derive(Debug, Clone)]
pub struct NewEmail<'a> {
    pub user_id: &'a str,
    pub kind: EmailKind,
    pub subject: &'a str,
    pub body: &'a str,
    /// Not before this (quiet hours); microseconds.
    pub not_before: i64,
}

/// Queues an email; the worker picks it up once due.
pub async fn insert_email(conn: &mut AnyConnection, new: &NewEmail<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_job (id, user_id, kind, subject, body, attempts, next_attempt_at, \
         status, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, 'ready', $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(new.user_id)
    .bind(new.kind.as_str())
    .bind(new.subject)
    .bind(new.body)
    .bind(new.not_before)
    .bind(now_micros())
    .execute(conn)
    .await?;
    Ok(())
}
