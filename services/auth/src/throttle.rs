//! Failed sign-in throttling, per account and per client address.
//!
//! A fixed window of failures: after `max_per_account` failed attempts on one
//! email, or `max_per_ip` from one address, further attempts are refused until
//! the window ends, whether or not the password is right. Counters live in
//! memory per replica; the gateway's per-IP rate limit bounds the total.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failures and refuses attempts over the budget.
#[derive(Debug)]
pub struct LoginThrottle {
    windows: Mutex<HashMap<String, Window>>,
    max_per_account: u32,
    max_per_ip: u32,
    window: Duration,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(10, 50, Duration::from_secs(15 * 60))
    }
}

impl LoginThrottle {
    pub fn new(max_per_account: u32, max_per_ip: u32, window: Duration) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            max_per_account,
            max_per_ip,
            window,
        }
    }

    /// RESOURCE_EXHAUSTED when the account or the address is over its budget.
    pub fn check(&self, email: &str, ip: &str) -> Result<(), Status> {
        let windows = self.windows.lock().expect("throttle lock");
        let over = |key: String, max: u32| {
            windows
                .get(&key)
                .is_some_and(|w| w.started.elapsed() < self.window && w.failures >= max)
        };
        if over(account_key(email), self.max_per_account) || over(ip_key(ip), self.max_per_ip) {
            return Err(Status::resource_exhausted(
                "too many failed sign-in attempts; try again later",
            ));
        }
        Ok(())
    }

    pub fn failed(&self, email: &str, ip: &str) {
        let mut windows = self.windows.lock().expect("throttle lock");
        if windows.len() > 100_000 {
            windows.retain(|_, w| w.started.elapsed() < self.window);
        }
        for key in [account_key(email), ip_key(ip)] {
            let w = windows.entry(key).or_insert(Window {
                started: Instant::now(),
                failures: 0,
            });
            if w.started.elapsed() >= self.window {
                *w = Window {
                    started: Instant::now(),
                    failures: 0,
                };
            }
            w.failures += 1;
        }
    }

    /// A success clears the account's failures (not the address's).
    pub fn succeeded(&self, email: &str) {
        self.windows
            .lock()
            .expect("throttle lock")
            .remove(&account_key(email));
    }
}

fn account_key(email: &str) -> String {
    format!("a:{}", email.trim().to_lowercase())
}

fn ip_key(ip: &str) -> String {
    format!("i:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_locked_after_its_budget_of_failures() {
        let throttle = LoginThrottle::new(3, 100, Duration::from_secs(60));
        for _ in 0..3 {
            throttle.check("a@x.io", "1.1.1.1").unwrap();
            throttle.failed("A@x.io", "1.1.1.1");
        }
        let err = throttle.check("a@x.io", "2.2.2.2").unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        throttle.check("b@x.io", "1.1.1.1").unwrap();
    }

    #[test]
    fn an_address_is_locked_across_accounts() {
        let throttle = LoginThrottle::new(100, 2, Duration::from_secs(60));
        throttle.failed("a@x.io", "9.9.9.9");
        throttle.failed("b@x.io", "9.9.9.9");
        assert!(throttle.check("c@x.io", "9.9.9.9").is_err());
        assert!(throttle.check("c@x.io", "8.8.8.8").is_ok());
    }

    #[test]
    fn the_window_ends() {
        let throttle = LoginThrottle::new(1, 1, Duration::from_millis(0));
        throttle.failed("a@x.io", "1.1.1.1");
        assert!(throttle.check("a@x.io", "1.1.1.1").is_ok());
    }
}
