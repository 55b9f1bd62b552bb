//! The notification service's own settings: how email leaves (SMTP or the
//! mailbox folder), how patiently it is retried, and when digests go out. Parsed
//! from any key/value source, every problem reported at once, like kit's `Config`.

use std::time::Duration;

use agora_kit::config::{ConfigErrors, Secret, parse_duration};

use crate::cron::Cron;

/// SMTP server URL (`smtp://host:25`, `smtps://user:pass@host`, lettre's syntax);
/// unset, mail is written to `$AGORA_DATA_DIR/mail/`.
pub const SMTP_URL: &str = "AGORA_SMTP_URL";
/// The `From` of every email.
pub const MAIL_FROM: &str = "AGORA_MAIL_FROM";
/// When the digest goes out: five cron fields, UTC.
pub const DIGEST_CRON: &str = "AGORA_DIGEST_CRON";
/// Deliveries tried per email, the first included, before it is dead.
pub const EMAIL_ATTEMPTS: &str = "AGORA_EMAIL_ATTEMPTS";
/// Wait after the first failed delivery; doubled after each further one.
pub const EMAIL_RETRY_BASE: &str = "AGORA_EMAIL_RETRY_BASE";

/// Every variable this module reads, for `agora config check` listings.
pub const VARIABLES: [&str; 5] = [
    SMTP_URL,
    MAIL_FROM,
    DIGEST_CRON,
    EMAIL_ATTEMPTS,
    EMAIL_RETRY_BASE,
];

const DEFAULT_DIGEST_CRON: &str = "0 9 * * *";
const DEFAULT_MAIL_FROM: &str = "agora <no-reply@agora.invalid>";

/// The validated settings.
#[derive(Debug, Clone)]
pub struct NotificationConfig {
    /// Where SMTP lives; `None` selects the mailbox folder. May hold a password.
    pub smtp_url: Option<Secret>,
    pub mail_from: String,
    pub digest_cron: Cron,
    pub email_attempts: u32,
    pub email_retry_base: Duration,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self::from_source(|_| None).expect("the defaults are valid")
    }
}

impl NotificationConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_source(|key| std::env::var(key).ok())
    }

    /// Parses from any key/value source, collecting every problem.
    pub fn from_source(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let get = |key: &str| {
            get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut errors = Vec::new();

        let smtp_url = get(SMTP_URL).and_then(|url| {
            if url.starts_with("smtp://") || url.starts_with("smtps://") {
                Some(Secret::new(url))
            } else {
                // The value may carry a password: never echo it.
                errors.push(format!(
                    "{SMTP_URL}: expected an smtp:// or smtps:// URL (the value is not shown)"
                ));
                None
            }
        });

        let mail_from = get(MAIL_FROM).unwrap_or_else(|| DEFAULT_MAIL_FROM.to_owned());
        if mail_from.parse::<lettre::message::Mailbox>().is_err() {
            errors.push(format!(
                "{MAIL_FROM}: `{mail_from}` is not an address like `agora <no-reply@example.com>`"
            ));
        }

        let raw_cron = get(DIGEST_CRON).unwrap_or_else(|| DEFAULT_DIGEST_CRON.to_owned());
        let digest_cron = raw_cron.parse::<Cron>().unwrap_or_else(|err| {
            errors.push(format!("{DIGEST_CRON}: {err}"));
            DEFAULT_DIGEST_CRON.parse().expect("the default schedule")
        });

        let email_attempts = match get(EMAIL_ATTEMPTS) {
            None => 3,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=20).contains(&n) => n,
                _ => {
                    errors.push(format!(
                        "{EMAIL_ATTEMPTS}: `{raw}` is not a whole number from 1 to 20"
                    ));
                    3
                }
            },
        };

        let email_retry_base = match get(EMAIL_RETRY_BASE) {
            None => Duration::from_secs(2),
            Some(raw) => parse_duration(&raw).unwrap_or_else(|| {
                errors.push(format!(
                    "{EMAIL_RETRY_BASE}: `{raw}` is not a duration like 2s, 1m or 1h"
                ));
                Duration::from_secs(2)
            }),
        };

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Self {
            smtp_url,
            mail_from,
            digest_cron,
            email_attempts,
            email_retry_base,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<NotificationConfig, ConfigErrors> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NotificationConfig::from_source(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_write_to_the_mailbox_and_digest_daily_at_nine() {
        let config = from(&[]).unwrap();
        assert!(config.smtp_url.is_none());
        assert_eq!(config.digest_cron.to_string(), "0 9 * * *");
        assert_eq!(config.email_attempts, 3);
        assert_eq!(config.email_retry_base, Duration::from_secs(2));
    }

    #[test]
    fn explicit_values_are_taken() {
        let config = from(&[
            (SMTP_URL, "smtp://mailer:secret@127.0.0.1:2525"),
            (DIGEST_CRON, "*/30 * * * 1-5"),
            (EMAIL_ATTEMPTS, "5"),
            (EMAIL_RETRY_BASE, "1m"),
            (MAIL_FROM, "news@example.com"),
        ])
        .unwrap();
        assert_eq!(
            config.smtp_url.as_ref().map(Secret::expose),
            Some("smtp://mailer:secret@127.0.0.1:2525")
        );
        assert_eq!(config.email_attempts, 5);
        assert_eq!(config.email_retry_base, Duration::from_secs(60));
        assert_eq!(config.mail_from, "news@example.com");
    }

    #[test]
    fn every_problem_is_reported_and_the_smtp_password_is_not() {
        let errors = from(&[
            (SMTP_URL, "http://user:hunter2@mail"),
            (DIGEST_CRON, "0 25 * * *"),
            (EMAIL_ATTEMPTS, "0"),
            (EMAIL_RETRY_BASE, "soon"),
            (MAIL_FROM, "not an address"),
        ])
        .unwrap_err();
        assert_eq!(errors.0.len(), 5, "{errors}");
        assert!(!errors.to_string().contains("hunter2"));
    }

    #[test]
    fn the_smtp_url_never_reaches_debug_output() {
        let config = from(&[(SMTP_URL, "smtp://u:hunter2@h")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
