//! The digest: on the configured schedule, one email per user listing what they
//! have not read since their last digest. Every replica runs the scheduler; the
//! `digest_run` row claimed per (user, period) makes each digest go out once.

use std::sync::Arc;
use std::time::Duration;

use agora_kit::db::Db;
use jiff::Timestamp;
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cron::{self, Cron};
use crate::domain::EmailKind;
use crate::store::{self, NewEmail};

/// Lines listed in one digest; the rest are summed up.
const LISTED: i64 = 10;

/// Sends digests on a schedule.
#[derive(Clone)]
pub struct DigestScheduler {
    db: Db,
    cron: Cron,
    email_wake: Arc<Notify>,
}

impl DigestScheduler {
    pub fn new(db: Db, cron: Cron, email_wake: Arc<Notify>) -> Self {
        Self {
            db,
            cron,
            email_wake,
        }
    }

    /// Queues the digests of the firing at `fired_at`; how many this call
    /// claimed. Safe to call from several replicas for the same firing.
    #[tracing::instrument(skip_all, fields(period = %cron::period(fired_at)), err)]
    pub async fn fire(&self, fired_at: Timestamp) -> Result<usize, sqlx::Error> {
        let period = cron::period(fired_at);
        let fired = fired_at.as_microsecond();
        // Users with an address and something unread that no digest covered yet.
        let candidates = sqlx::query(
            "SELECT n.user_id, COUNT(*) FROM notification n \
             WHERE n.read = 0 AND n.created_at <= $1 \
             AND n.created_at > COALESCE((SELECT MAX(d.fired_at) FROM digest_run d \
                 WHERE d.user_id = n.user_id), 0) \
             AND EXISTS (SELECT 1 FROM account a WHERE a.user_id = n.user_id) \
             GROUP BY n.user_id",
        )
        .bind(fired)
        .fetch_all(self.db.pool())
        .await?;

        let mut claimed = 0;
        for row in candidates {
            let user_id: String = row.try_get(0)?;
            let unread: i64 = row.try_get(1)?;
            if self
                .claim_and_queue(&user_id, unread, &period, fired)
                .await?
            {
                claimed += 1;
            }
        }
        if claimed > 0 {
            self.email_wake.notify_one();
        }
        Ok(claimed)
    }

    /// One user's digest: the claim and the email commit together, so a digest is
    /// queued exactly when its period is claimed.
    async fn claim_and_queue(
        &self,
        user_id: &str,
        unread: i64,
        period: &str,
        fired: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        let since: i64 =
            sqlx::query("SELECT COALESCE(MAX(fired_at), 0) FROM digest_run WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let won = sqlx::query(
            "INSERT INTO digest_run (user_id, period, fired_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, period) DO NOTHING",
        )
        .bind(user_id)
        .bind(period)
        .bind(fired)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            return Ok(false);
        }
        let lines: Vec<String> = sqlx::query(
            "SELECT text FROM notification WHERE user_id = $1 AND read = 0 \
             AND created_at > $2 AND created_at <= $3 \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(user_id)
        .bind(since)
        .bind(fired)
        .bind(LISTED)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
        let subject = if unread == 1 {
            "Your agora digest: 1 unread notification".to_owned()
        } else {
            format!("Your agora digest: {unread} unread notifications")
        };
        let mut body = String::from("Since your last digest:\n\n");
        for line in &lines {
            body.push_str(&format!("- {line}\n"));
        }
        let more = unread - i64::try_from(lines.len()).unwrap_or(0);
        if more > 0 {
            body.push_str(&format!("\n…and {more} more in the app.\n"));
        }
        store::insert_email(
            &mut tx,
            &NewEmail {
                user_id,
                kind: EmailKind::Digest,
                subject: &subject,
                body: &body,
                not_before: fired,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Fires at each scheduled time until `shutdown`. Sleeps are re-planned from
    /// the wall clock each time, so a suspended machine or a clock step does not
    /// push every later digest off schedule.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last = Timestamp::now();
        loop {
            let now = Timestamp::now().max(last);
            let Some(next) = self.cron.next_after_instant(now) else {
                tracing::error!(schedule = %self.cron, "the digest schedule never fires again");
                return;
            };
            let wait =
                Duration::try_from(next.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            // A failed round is logged by `instrument`; the claims make a later
            // retry of the same period harmless, but we move on to the next one.
            let _ = self.fire(next).await;
            last = next;
        }
    }
}
