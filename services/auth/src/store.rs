//! Sessions and refresh tokens. Rotation is one transaction: the presented token
//! is marked used only if it was unused, and the new one is inserted beside it.
//! A token found already used means it was stolen or replayed, and the whole
//! session is revoked.
//!
//! Every revocation commits together with an `auth.sessions_revoked` event in the
//! outbox, so every replica's verifier hears of it (ADR 11).

use std::time::Duration;

use agora_kit::db::{Db, now_micros};
use agora_kit::events::relay::Wake;
use agora_kit::events::{self, outbox, types};
use agora_kit::token::Role;
use agora_proto::events::v1 as ev;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

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

/// How long after a refresh token was spent a second use still gets the same
/// successor: enough for tabs refreshing at once, too short to be worth stealing.
pub const REUSE_GRACE: Duration = Duration::from_secs(10);

/// How long sessions last.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// After the last refresh.
    pub sliding: Duration,
    /// After sign-in, however often refreshed.
    pub absolute: Duration,
}

impl SessionLimits {
    /// When a session used at `now` ends, given its absolute end.
    fn expiry(self, now: i64, absolute: i64) -> i64 {
        now.saturating_add(micros(self.sliding)).min(absolute)
    }
}

/// The successor token as stored beside the spent one: XORed with a key derived
/// from the spent token, which only its holder has (the database keeps only its
/// hash). Each key seals exactly one successor.
fn seal(spent: &str, successor: &str) -> anyhow::Result<String> {
    let bytes = URL_SAFE_NO_PAD.decode(successor)?;
    let key = sealing_key(spent);
    anyhow::ensure!(bytes.len() == key.len(), "refresh tokens are 32 bytes");
    Ok(bytes
        .iter()
        .zip(key.iter())
        .map(|(b, k)| format!("{:02x}", b ^ k))
        .collect())
}

fn unseal(spent: &str, sealed: &str) -> anyhow::Result<String> {
    let key = sealing_key(spent);
    anyhow::ensure!(
        sealed.len() == 2 * key.len(),
        "sealed successor has the wrong size"
    );
    let bytes = (0..key.len())
        .map(|i| u8::from_str_radix(&sealed[2 * i..2 * i + 2], 16).map(|b| b ^ key[i]))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn sealing_key(spent: &str) -> impl std::ops::Deref<Target = [u8]> {
    Sha256::digest([b"agora refresh successor:".as_slice(), spent.as_bytes()].concat())
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

/// Why sessions ended, as the event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Logout,
    Revoked,
    Replayed,
    LogoutAll,
    AccountDeleted,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Logout => "logout",
            Reason::Revoked => "revoked",
            Reason::Replayed => "replayed",
            Reason::LogoutAll => "logout_all",
            Reason::AccountDeleted => "account_deleted",
        }
    }
}

/// The auth service's name as an event producer.
const PRODUCER: &str = "auth";

/// What verifiers must know: sessions revoked and roles changed since a time.
#[derive(Debug, Default)]
pub struct RevocationRows {
    /// (session id, account id, revoked at)
    pub sessions: Vec<(String, String, i64)>,
    /// (account id, role, changed at)
    pub roles: Vec<(String, Role, i64)>,
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    wake: Wake,
}

impl Store {
    pub fn new(db: Db, wake: Wake) -> Self {
        Self { db, wake }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    #[tracing::instrument(skip_all, err)]
    pub async fn start_session(
        &self,
        user_id: &str,
        user_agent: &str,
        ip_address: &str,
        limits: SessionLimits,
    ) -> anyhow::Result<NewSession> {
        let session_id = uuid::Uuid::now_v7().to_string();
        let refresh_token = new_refresh_token()?;
        let now = now_micros();
        let absolute = now.saturating_add(micros(limits.absolute));
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO session (id, user_id, user_agent, ip_address, created_at, last_used_at, \
             expires_at, absolute_expires_at) VALUES ($1, $2, $3, $4, $5, $5, $6, $7)",
        )
        .bind(&session_id)
        .bind(user_id)
        .bind(truncate(user_agent, 512))
        .bind(truncate(ip_address, 64))
        .bind(now)
        .bind(limits.expiry(now, absolute))
        .bind(absolute)
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

    /// Trades a refresh token for its successor, at `now` (microseconds).
    ///
    /// The first use mints the successor. A second use within [`REUSE_GRACE`],
    /// while the successor is still unused, answers with the same successor (two
    /// tabs refreshing at once). Any other use of a spent token is a replay: the
    /// session is revoked.
    #[tracing::instrument(skip_all, err)]
    pub async fn rotate(
        &self,
        presented: &str,
        limits: SessionLimits,
        now: i64,
    ) -> anyhow::Result<Rotation> {
        let hash = hash_refresh_token(presented);
        let mut tx = self.db.pool().begin().await?;
        let row = sqlx::query(
            "SELECT s.id, s.user_id, s.expires_at, s.absolute_expires_at, s.revoked_at \
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
        let absolute: i64 = row.try_get("absolute_expires_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        if revoked_at.is_some() || expires_at <= now || absolute <= now {
            return Ok(Rotation::Invalid);
        }
        // The guard on `used_at` makes two concurrent uses of one token resolve to
        // one rotation and one second use, never two rotations.
        let refresh_token = new_refresh_token()?;
        let successor_hash = hash_refresh_token(&refresh_token);
        let claimed = sqlx::query(
            "UPDATE refresh_token SET used_at = $1, successor_hash = $2, successor_sealed = $3 \
             WHERE token_hash = $4 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&successor_hash)
        .bind(seal(presented, &refresh_token)?)
        .bind(&hash)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            sqlx::query(
                "INSERT INTO refresh_token (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(&successor_hash)
            .bind(&session_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE session SET last_used_at = $1, expires_at = $2 WHERE id = $3")
                .bind(now)
                .bind(limits.expiry(now, absolute))
                .bind(&session_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Rotation::Rotated {
                session_id,
                user_id,
                refresh_token,
            });
        }
        if let Some(refresh_token) = self.within_grace(&mut tx, presented, &hash, now).await? {
            tx.commit().await?;
            return Ok(Rotation::Rotated {
                session_id,
                user_id,
                refresh_token,
            });
        }
        let revoked = sqlx::query(
            "UPDATE session SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             RETURNING id, user_id",
        )
        .bind(now)
        .bind(&session_id)
        .fetch_all(&mut *tx)
        .await?;
        announce(&mut tx, &revoked, Reason::Replayed).await?;
        outbox::commit(tx, &self.wake).await?;
        tracing::warn!(%session_id, "refresh token reused: session revoked");
        Ok(Rotation::Reused { session_id })
    }

    /// The successor of a spent token, if it was spent within [`REUSE_GRACE`] and
    /// its successor has not been used yet.
    async fn within_grace(
        &self,
        conn: &mut AnyConnection,
        presented: &str,
        hash: &str,
        now: i64,
    ) -> anyhow::Result<Option<String>> {
        let spent = sqlx::query(
            "SELECT t.used_at, t.successor_sealed, n.used_at AS successor_used_at \
             FROM refresh_token t JOIN refresh_token n ON n.token_hash = t.successor_hash \
             WHERE t.token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(spent) = spent else {
            return Ok(None);
        };
        let used_at: Option<i64> = spent.try_get("used_at")?;
        let successor_used_at: Option<i64> = spent.try_get("successor_used_at")?;
        let sealed: Option<String> = spent.try_get("successor_sealed")?;
        let fresh = used_at.is_some_and(|at| now - at <= micros(REUSE_GRACE));
        match sealed {
            Some(sealed) if fresh && successor_used_at.is_none() => {
                Ok(Some(unseal(presented, &sealed)?))
            }
            _ => Ok(None),
        }
    }

    /// Revokes the session a refresh token belongs to; whether there was one.
    pub async fn revoke_by_token(&self, presented: &str) -> Result<bool, sqlx::Error> {
        let revoked = self
            .revoke(
                "revoked_at IS NULL AND id = \
                 (SELECT session_id FROM refresh_token WHERE token_hash = $2)",
                &[&hash_refresh_token(presented)],
                Reason::Logout,
            )
            .await?;
        Ok(revoked == 1)
    }

    /// Revokes one of a user's sessions; whether it was theirs and active.
    pub async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let revoked = self
            .revoke(
                "id = $2 AND user_id = $3 AND revoked_at IS NULL",
                &[session_id, user_id],
                Reason::Revoked,
            )
            .await?;
        Ok(revoked == 1)
    }

    /// Revokes every session of a user; how many were active.
    pub async fn revoke_all(&self, user_id: &str, reason: Reason) -> Result<u64, sqlx::Error> {
        self.revoke("user_id = $2 AND revoked_at IS NULL", &[user_id], reason)
            .await
    }

    /// Revokes the sessions `filter` selects (`$1` is the time; `binds` are `$2`…)
    /// and announces them, in one transaction.
    async fn revoke(
        &self,
        filter: &str,
        binds: &[&str],
        reason: Reason,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let sql =
            format!("UPDATE session SET revoked_at = $1 WHERE {filter} RETURNING id, user_id");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_micros());
        for bind in binds {
            query = query.bind(*bind);
        }
        let revoked = query.fetch_all(&mut *tx).await?;
        announce(&mut tx, &revoked, reason).await?;
        outbox::commit(tx, &self.wake).await?;
        Ok(revoked.len() as u64)
    }

    /// Revokes a deleted account's sessions, once per event (the inbox).
    pub async fn forget_account(
        &self,
        consumer: &str,
        event_id: &str,
        user_id: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        if !events::inbox::claim(&mut tx, consumer, event_id).await? {
            return Ok(());
        }
        let revoked = sqlx::query(
            "UPDATE session SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL \
             RETURNING id, user_id",
        )
        .bind(now_micros())
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        announce(&mut tx, &revoked, Reason::AccountDeleted).await?;
        outbox::commit(tx, &self.wake).await
    }

    /// Remembers an account's new role for ListRevocations; an older change than
    /// the one stored changes nothing.
    pub async fn record_role_change(
        &self,
        user_id: &str,
        role: Role,
        changed_at: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO role_change (user_id, role, changed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET role = excluded.role, changed_at = excluded.changed_at \
             WHERE role_change.changed_at <= excluded.changed_at",
        )
        .bind(user_id)
        .bind(role.as_str())
        .bind(changed_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Sessions revoked and roles changed after `since` (microseconds).
    pub async fn revocations_since(&self, since: i64) -> Result<RevocationRows, sqlx::Error> {
        let mut rows = RevocationRows::default();
        for row in sqlx::query("SELECT id, user_id, revoked_at FROM session WHERE revoked_at > $1")
            .bind(since)
            .fetch_all(self.db.pool())
            .await?
        {
            rows.sessions
                .push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
        for row in
            sqlx::query("SELECT user_id, role, changed_at FROM role_change WHERE changed_at > $1")
                .bind(since)
                .fetch_all(self.db.pool())
                .await?
        {
            let raw: String = row.try_get(1)?;
            let role = Role::parse(&raw).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown stored role {raw:?}").into())
            })?;
            rows.roles.push((row.try_get(0)?, role, row.try_get(2)?));
        }
        Ok(rows)
    }

    /// Deletes sessions that ended before `before` (microseconds), with their
    /// refresh tokens, and role changes and sign-in failures older than it; how
    /// many sessions went.
    pub async fn prune(&self, before: i64) -> Result<u64, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let ended = "(revoked_at IS NOT NULL AND revoked_at < $1) OR expires_at < $1";
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM refresh_token WHERE session_id IN (SELECT id FROM session WHERE {ended})"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let sessions = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM session WHERE {ended}"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM role_change WHERE changed_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        // Sign-in throttle windows last minutes; `before` is far past them.
        sqlx::query("DELETE FROM login_failure WHERE window_start < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(sessions)
    }

    /// Prunes every hour until `shutdown`, keeping ended sessions for `keep`
    /// (at least the revocation window: `ListRevocations` reads them).
    pub async fn prune_forever(
        self,
        keep: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            match self.prune(now_micros().saturating_sub(micros(keep))).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "ended sessions pruned"),
                Err(err) => tracing::warn!(error = %err, "pruning sessions failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
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

/// Puts one `auth.sessions_revoked` event for the `(id, user_id)` rows of one
/// account in the outbox; nothing when no session was active.
async fn announce(
    conn: &mut AnyConnection,
    revoked: &[sqlx::any::AnyRow],
    reason: Reason,
) -> Result<(), sqlx::Error> {
    let Some(first) = revoked.first() else {
        return Ok(());
    };
    let event = ev::SessionsRevoked {
        user_id: first.try_get("user_id")?,
        session_ids: revoked
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?,
        reason: reason.as_str().to_owned(),
    };
    outbox::enqueue(
        conn,
        &events::envelope(types::SESSIONS_REVOKED, PRODUCER, &event),
    )
    .await
}

fn truncate(value: &str, max: usize) -> &str {
    match value.char_indices().nth(max) {
        Some((i, _)) => &value[..i],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;
    const SECOND: i64 = 1_000_000;

    async fn store() -> Store {
        Store::new(crate::test_db().await, Wake::default())
    }

    const LIMITS: SessionLimits = SessionLimits {
        sliding: Duration::from_secs(7 * 86_400),
        absolute: Duration::from_secs(8 * 86_400),
    };

    async fn successor(store: &Store, token: &str, at: i64) -> String {
        match store.rotate(token, LIMITS, at).await.unwrap() {
            Rotation::Rotated { refresh_token, .. } => refresh_token,
            other => panic!("expected a successor, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_second_use_within_the_grace_gets_the_same_successor_until_that_is_used() {
        let store = store().await;
        let first = store.start_session("u1", "", "", LIMITS).await.unwrap();
        let t = now_micros();

        let tab_one = successor(&store, &first.refresh_token, t).await;
        let tab_two = successor(&store, &first.refresh_token, t + SECOND).await;
        assert_eq!(tab_one, tab_two);

        let next = successor(&store, &tab_one, t + 2 * SECOND).await;
        assert!(matches!(
            store
                .rotate(&first.refresh_token, LIMITS, t + 3 * SECOND)
                .await
                .unwrap(),
            Rotation::Reused { .. }
        ));
        assert!(matches!(
            store.rotate(&next, LIMITS, t + 4 * SECOND).await.unwrap(),
            Rotation::Invalid
        ));
    }

    #[tokio::test]
    async fn a_second_use_after_the_grace_is_a_replay() {
        let store = store().await;
        let first = store.start_session("u1", "", "", LIMITS).await.unwrap();
        let t = now_micros();
        let next = successor(&store, &first.refresh_token, t).await;

        let late = t + micros(REUSE_GRACE) + SECOND;
        assert!(matches!(
            store
                .rotate(&first.refresh_token, LIMITS, late)
                .await
                .unwrap(),
            Rotation::Reused { .. }
        ));
        assert!(matches!(
            store.rotate(&next, LIMITS, late).await.unwrap(),
            Rotation::Invalid
        ));
    }

    #[tokio::test]
    async fn a_session_ends_at_its_absolute_lifetime_however_often_refreshed() {
        let store = store().await;
        let first = store.start_session("u1", "", "", LIMITS).await.unwrap();
        let t = now_micros();

        let day_five = successor(&store, &first.refresh_token, t + 5 * DAY).await;

        // Sliding alone would allow day 9 (5 + 7); the absolute 8 days do not.
        assert!(matches!(
            store.rotate(&day_five, LIMITS, t + 9 * DAY).await.unwrap(),
            Rotation::Invalid
        ));
    }

    #[tokio::test]
    async fn ended_sessions_are_pruned_after_they_stop_mattering() {
        let store = store().await;
        let gone = store.start_session("u1", "", "", LIMITS).await.unwrap();
        let kept = store.start_session("u1", "", "", LIMITS).await.unwrap();
        store.revoke_by_token(&gone.refresh_token).await.unwrap();

        let pruned = store.prune(now_micros() + SECOND).await.unwrap();

        assert_eq!(pruned, 1);
        let left = store.active_sessions("u1").await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, kept.session_id);
        assert!(matches!(
            store
                .rotate(&gone.refresh_token, LIMITS, now_micros())
                .await
                .unwrap(),
            Rotation::Invalid
        ));
    }

    #[test]
    fn a_sealed_successor_opens_only_with_the_spent_token() {
        let spent = new_refresh_token().unwrap();
        let successor = new_refresh_token().unwrap();
        let sealed = seal(&spent, &successor).unwrap();

        assert_eq!(unseal(&spent, &sealed).unwrap(), successor);
        let other = new_refresh_token().unwrap();
        assert_ne!(unseal(&other, &sealed).unwrap(), successor);
        assert!(!sealed.contains(&successor));
    }
}
