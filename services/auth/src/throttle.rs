//! Failed sign-in throttling, per account and per client address.
//!
//! A fixed window of failures: after `max_per_account` failed attempts on one
//! email, or `max_per_ip` from one address, further attempts are refused until
//! the window ends, whether or not the password is right, with the time left as
//! `google.rpc.RetryInfo` (the gateway's `Retry-After`). Counters live in the
//! auth database, so every replica spends one budget; keys are bounded (the
//! email is hashed, the address truncated), and the store prunes rows of ended
//! windows with the sessions.

use std::time::Duration;

use agora_kit::db::{Db, now_micros};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tonic::Status;

/// Counts failures and refuses attempts over the budget.
#[derive(Debug, Clone)]
pub struct LoginThrottle {
    db: Db,
    max_per_account: u32,
    max_per_ip: u32,
    window: Duration,
}

impl LoginThrottle {
    /// Ten failures per account and fifty per address in fifteen minutes.
    pub fn standard(db: Db) -> Self {
        Self::new(db, 10, 50, Duration::from_secs(15 * 60))
    }

    pub fn new(db: Db, max_per_account: u32, max_per_ip: u32, window: Duration) -> Self {
        Self {
            db,
            max_per_account,
            max_per_ip,
            window,
        }
    }

    fn window_micros(&self) -> i64 {
        i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX)
    }

    /// RESOURCE_EXHAUSTED, with the time left, when the account or the address
    /// is over its budget.
    pub async fn check(&self, email: &str, ip: &str) -> Result<(), Status> {
        let now = now_micros();
        let rows = sqlx::query(
            "SELECT key, window_start, failures FROM login_failure WHERE key IN ($1, $2)",
        )
        .bind(account_key(email))
        .bind(ip_key(ip))
        .fetch_all(self.db.pool())
        .await
        .map_err(agora_kit::status::db)?;
        let mut locked_until = None;
        for row in rows {
            let key: String = row.try_get(0).map_err(agora_kit::status::db)?;
            let start: i64 = row.try_get(1).map_err(agora_kit::status::db)?;
            let failures: i64 = row.try_get(2).map_err(agora_kit::status::db)?;
            let max = if key.starts_with("a:") {
                self.max_per_account
            } else {
                self.max_per_ip
            };
            let ends = start.saturating_add(self.window_micros());
            if ends > now && failures >= i64::from(max) {
                locked_until = locked_until.max(Some(ends));
            }
        }
        match locked_until {
            None => Ok(()),
            Some(until) => Err(agora_kit::status::exhausted(
                "too many failed sign-in attempts; try again later",
                Duration::from_micros(u64::try_from(until - now).unwrap_or(0)),
            )),
        }
    }

    /// Counts a failure against the account and the address.
    pub async fn failed(&self, email: &str, ip: &str) -> Result<(), sqlx::Error> {
        let now = now_micros();
        let ended = now.saturating_sub(self.window_micros());
        for key in [account_key(email), ip_key(ip)] {
            sqlx::query(
                "INSERT INTO login_failure (key, window_start, failures) VALUES ($1, $2, 1) \
                 ON CONFLICT (key) DO UPDATE SET \
                 failures = CASE WHEN login_failure.window_start <= $3 THEN 1 \
                                 ELSE login_failure.failures + 1 END, \
                 window_start = CASE WHEN login_failure.window_start <= $3 THEN $2 \
                                     ELSE login_failure.window_start END",
            )
            .bind(key)
            .bind(now)
            .bind(ended)
            .execute(self.db.pool())
            .await?;
        }
        Ok(())
    }

    /// A success clears the account's failures (not the address's).
    pub async fn succeeded(&self, email: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM login_failure WHERE key = $1")
            .bind(account_key(email))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

/// A fixed-size key whatever the email's length.
fn account_key(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("a:{hex}")
}

fn ip_key(ip: &str) -> String {
    let ip = match ip.char_indices().nth(64) {
        Some((end, _)) => &ip[..end],
        None => ip,
    };
    format!("i:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt as _;

    use crate::test_db as db;

    #[tokio::test]
    async fn an_account_is_locked_after_its_budget_of_failures_and_says_for_how_long() {
        let throttle = LoginThrottle::new(db().await, 3, 100, Duration::from_secs(60));
        for _ in 0..3 {
            throttle.check("a@x.io", "1.1.1.1").await.unwrap();
            throttle.failed("A@x.io", "1.1.1.1").await.unwrap();
        }
        let err = throttle.check("a@x.io", "2.2.2.2").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        let wait = err.get_details_retry_info().unwrap().retry_delay.unwrap();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        throttle.check("b@x.io", "1.1.1.1").await.unwrap();
    }

    #[tokio::test]
    async fn replicas_share_one_budget() {
        let db = db().await;
        let one = LoginThrottle::new(db.clone(), 2, 100, Duration::from_secs(60));
        let two = LoginThrottle::new(db, 2, 100, Duration::from_secs(60));
        one.failed("a@x.io", "1.1.1.1").await.unwrap();
        two.failed("a@x.io", "1.1.1.2").await.unwrap();
        assert!(one.check("a@x.io", "3.3.3.3").await.is_err());
        assert!(two.check("a@x.io", "3.3.3.3").await.is_err());
    }

    #[tokio::test]
    async fn an_address_is_locked_across_accounts() {
        let throttle = LoginThrottle::new(db().await, 100, 2, Duration::from_secs(60));
        throttle.failed("a@x.io", "9.9.9.9").await.unwrap();
        throttle.failed("b@x.io", "9.9.9.9").await.unwrap();
        assert!(throttle.check("c@x.io", "9.9.9.9").await.is_err());
        assert!(throttle.check("c@x.io", "8.8.8.8").await.is_ok());
    }

    #[tokio::test]
    async fn a_success_clears_the_account_and_ended_windows_lock_nothing() {
        let throttle = LoginThrottle::new(db().await, 1, 100, Duration::from_secs(60));
        throttle.failed("a@x.io", "1.1.1.1").await.unwrap();
        throttle.succeeded("a@x.io").await.unwrap();
        assert!(throttle.check("a@x.io", "1.1.1.1").await.is_ok());

        let ended = LoginThrottle::new(throttle.db.clone(), 1, 1, Duration::ZERO);
        assert!(ended.check("a@x.io", "1.1.1.1").await.is_ok());
    }

    #[test]
    fn keys_stay_small_whatever_comes_in() {
        let long = format!("{}@x.io", "a".repeat(100_000));
        assert_eq!(account_key(&long).len(), 66);
        assert_eq!(ip_key(&"9".repeat(10_000)).len(), 66);
        assert_eq!(account_key(" A@X.io "), account_key("a@x.io"));
    }
}
