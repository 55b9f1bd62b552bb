//! Outgoing email: a job queue in the `email_job` table and the worker that
//! drains it. Jobs are claimed safely with several replicas, sent through a
//! [`Mailer`], retried with exponential backoff, and marked dead after the last
//! attempt. The worker wakes on a [`Notify`] when a job is queued and once a
//! second in any case (for retries and jobs held back by quiet hours).

mod mailer;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use agora_kit::db::{Db, now_micros};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use mailer::{MailboxMailer, Mailer, OutgoingEmail, SmtpMailer, render};

/// Jobs claimed per round. They are sent one after another, so BATCH × the SMTP
/// timeout (30 s) must stay under LEASE, or a slow batch's tail could be claimed
/// again by another replica.
const BATCH: i64 = 8;
/// How long a claimed job stays with its worker: longer than a whole batch of
/// timed-out SMTP exchanges, short enough that a crashed replica's mail is not
/// held up for long.
const LEASE: Duration = Duration::from_secs(300);
/// The poll that catches retries and jobs whose quiet hours ended.
const TICK: Duration = Duration::from_secs(1);

/// How patiently failed deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Deliveries in all, the first included, before the job is dead.
    pub attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub base: Duration,
}

impl RetryPolicy {
    /// The wait after failure number `attempts` (from 1): `base * 2^(attempts-1)`.
    pub fn delay_after(&self, attempts: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub sent: usize,
    pub retried: usize,
    pub dead: usize,
}

impl Round {
    pub fn total(&self) -> usize {
        self.sent + self.retried + self.dead
    }
}

/// Drains the email queue.
#[derive(Clone)]
pub struct EmailWorker {
    db: Db,
    mailer: Arc<dyn Mailer>,
    policy: RetryPolicy,
}

impl EmailWorker {
    pub fn new(db: Db, mailer: Arc<dyn Mailer>, policy: RetryPolicy) -> Self {
        Self { db, mailer, policy }
    }

    /// Claims and sends the jobs due at `now` (microseconds), one batch. `now` is
    /// a parameter so tests can step through backoff without waiting.
    #[tracing::instrument(skip_all, err)]
    pub async fn run_due(&self, now: i64) -> Result<Round, sqlx::Error> {
        let lease_until = now.saturating_add(i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX));
        let jobs = queue::claim_due(&self.db, now, lease_until, BATCH).await?;
        let mut round = Round::default();
        for job in jobs {
            let attempts = job.attempts + 1;
            let Some(to) = job.to else {
                // Nobody to write to will appear by waiting.
                queue::mark_failed(
                    &self.db,
                    &job.id,
                    attempts,
                    None,
                    "recipient has no account",
                )
                .await?;
                round.dead += 1;
                continue;
            };
            let email = OutgoingEmail {
                id: job.id.clone(),
                to,
                subject: job.subject,
                body: job.body,
            };
            match self.mailer.send(&email).await {
                Ok(()) => {
                    queue::mark_sent(&self.db, &job.id).await?;
                    round.sent += 1;
                }
                Err(err) => {
                    let error = format!("{err:#}");
                    let tried = u32::try_from(attempts).unwrap_or(u32::MAX);
                    if tried >= self.policy.attempts {
                        tracing::error!(job = %job.id, attempts, %error, "email is dead");
                        queue::mark_failed(&self.db, &job.id, attempts, None, &error).await?;
                        round.dead += 1;
                    } else {
                        let delay = self.policy.delay_after(tried);
                        let at = now
                            .saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
                        tracing::warn!(job = %job.id, attempts, %error, ?delay, "email failed; will retry");
                        queue::mark_failed(&self.db, &job.id, attempts, Some(at), &error).await?;
                        round.retried += 1;
                    }
                }
            }
        }
        Ok(round)
    }

    /// Runs until `shutdown`: a round whenever woken or a tick passes, and
    /// straight away again while rounds come back full.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            match self.run_due(now_micros()).await {
                Ok(round) if round.total() as i64 >= BATCH => continue,
                Ok(_) => {}
                // Logged by `instrument`; the next tick tries again.
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base() {
        let policy = RetryPolicy {
            attempts: 3,
            base: Duration::from_secs(2),
        };
        assert_eq!(policy.delay_after(1), Duration::from_secs(2));
        assert_eq!(policy.delay_after(2), Duration::from_secs(4));
        assert_eq!(policy.delay_after(3), Duration::from_secs(8));
    }
}
