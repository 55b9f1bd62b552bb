//! Sessions and refresh tokens. Rotation is one transaction: the presented token
//! is marked used only if it was unused, and the new one is inserted beside it.
//! A token found already used means it was stolen or replayed, and the whole
//! session is revoked.

use std::time::Duration;

use agora_kit::db::{Db, now_micros};
use sqlx::Row;

use crate::tokens::{hash_refresh_token, new_refresh_token};

/// A stored session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub user_agent: String,
    pub ip_address: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
}

/// A session just started, with its first refresh token.
#[derive(Debug)]
pub struct NewSession {
    pub session_id: String,
    pub refresh_token: String,
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    /// The token was good; here is its successor.
    Rotated {
        session_id: String,
        user_id: String,
        refresh_token: String,
    },
    /// The token had been used before: its session is now revoked.
    Reused { session_id: String },
    /// Unknown, expired or revoked.
    Invalid,
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    #[tracing::instrument(skip_all, err)]
    pub async fn start_session(
        &self,
        user_id: &str,
        user_agent: &str,
        ip_address: &str,
        ttl: Duration,
    ) -> anyhow::Result<NewSession> {
        let session_id = uuid::Uuid::now_v7().to_string();
        let refresh_token = new_refresh_token()?;
        let now = now_micros();
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO session (id, user_id, user_agent, ip_address, created_at, last_used_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $5, $6)",
        )
        .bind(&session_id)
        .bind(user_id)
        .bind(truncate(user_agent, 512))
        .bind(truncate(ip_address, 64))
        .bind(now)
        .bind(now + micros(ttl))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_token (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(hash_refresh_token(&refresh_token))
        .bind(&session_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(NewSession {
            session_id,
            refresh_token,
        })
    }

    #[tracing::instrument(skip_all, err)]
    pub async fn rotate(&self, presented: &str, ttl: Duration) -> anyhow::Result<Rotation> {
        let hash = hash_refresh_token(presented);
        let now = now_micros();
        let mut tx = self.db.pool().begin().await?;
        let row = sqlx::query(
            "SELECT s.id, s.user_id, s.expires_at, s.revoked_at, t.used_at \
             FROM refresh_token t JOIN session s ON s.id = t.session_id \
             WHERE t.token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::Invalid);
        };
        let session_id: String = row.try_get("id")?;
        let user_id: String = row.try_get("user_id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        let used_at: Option<i64> = row.try_get("used_at")?;
        if revoked_at.is_some() || expires_at <= now {
            return Ok(Rotation::Invalid);
        }
        // The guard on `used_at` makes two concurrent uses of one token resolve to
        // one rotation and one reuse, never two rotations.
        let claimed = sqlx::query(
            "UPDATE refresh_token SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&hash)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if used_at.is_some() || !claimed {
            sqlx::query("UPDATE session SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(&session_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::warn!(%session_id, "refresh token reused: session revoked");
            return Ok(Rotation::Reused { session_id });
        }
        let refresh_token = new_refresh_token()?;
        sqlx::query(
            "INSERT INTO refresh_token (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(hash_refresh_token(&refresh_token))
        .bind(&session_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE session SET last_used_at = $1, expires_at = $2 WHERE id = $3")
            .bind(now)
            .bind(now + micros(ttl))
            .bind(&session_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated {
            session_id,
            user_id,
            refresh_token,
        })
    }

    /// Revokes the session a refresh token belongs to; whether there was one.
    pub async fn revoke_by_token(&self, presented: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE session SET revoked_at = $1 WHERE revoked_at IS NULL AND id = \
             (SELECT session_id FROM refresh_token WHERE token_hash = $2)",
        )
        .bind(now_micros())
        .bind(hash_refresh_token(presented))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes one of a user's sessions; whether it was theirs and active.
    pub async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE session SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_micros())
        .bind(session_id)
        .bind(user_id)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes every session of a user (deleted account, password change).
    pub async fn revoke_all(&self, user_id: &str) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE session SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_micros())
        .bind(user_id)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// A user's active sessions, newest first (at most 100).
    pub async fn active_sessions(&self, user_id: &str) -> Result<Vec<SessionRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, user_id, user_agent, ip_address, created_at, last_used_at, expires_at \
             FROM session WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC LIMIT 100",
        )
        .bind(user_id)
        .bind(now_micros())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SessionRow {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    user_agent: row.try_get("user_agent")?,
                    ip_address: row.try_get("ip_address")?,
                    created_at: row.try_get("created_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect()
    }
}

fn truncate(value: &str, max: usize) -> &str {
    match value.char_indices().nth(max) {
        Some((i, _)) => &value[..i],
        None => value,
    }
}
