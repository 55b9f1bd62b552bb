//! The notification service: reacts to `user.*` and `post.*` events with an in-app
//! feed, a live stream, email (one at a time or as a digest) and per-user delivery
//! preferences. It keeps its own projections of accounts and follows, so a new
//! article reaches every follower without calling the user service.
//!
//! [`start`] is the one entry point the binary needs: it returns the gRPC API and
//! the bus handler, and spawns the email worker, the digest scheduler and the
//! live fan-out.

pub mod api;
pub mod config;
pub mod cron;
pub mod digest;
pub mod domain;
pub mod email;
pub mod events;
pub mod live;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use agora_kit::db::{Db, Migrations};
use agora_kit::events::{Consumer, Envelope};
use agora_kit::token::TokenVerifier;
use anyhow::Context;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use api::NotificationApi;
pub use config::NotificationConfig;
pub use events::{CONSUMER, EventHandler, bindings};

/// The notification service's schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[(
        1,
        "notification",
        include_str!("../migrations/sqlite/0001_notification.sql"),
    )],
    postgres: &[(
        1,
        "notification",
        include_str!("../migrations/postgres/0001_notification.sql"),
    )],
};

/// Opens and migrates the notification database.
pub async fn open_db(target: &agora_kit::config::DatabaseTarget) -> anyhow::Result<Db> {
    let db = Db::connect(target, agora_kit::ServiceName::Notification).await?;
    db.migrate(&MIGRATIONS).await?;
    Ok(db)
}

/// What [`start`] hands back to the binary.
pub struct NotificationParts {
    /// Register with `NotificationServiceServer::new(parts.api)`.
    pub api: NotificationApi,
    /// The bus handler; [`NotificationParts::consumer`] wraps it.
    pub handler: Arc<EventHandler>,
    /// The email worker, digest scheduler and live fan-out; each ends when the
    /// shutdown token is cancelled.
    pub tasks: Vec<JoinHandle<()>>,
}

impl NotificationParts {
    /// The bus consumer (`notification`, bound to `user.*` and `post.*`) to pass
    /// to `Bus::start_consumer`.
    pub fn consumer(&self) -> Consumer {
        self.handler.consumer()
    }
}

/// Builds the service on an opened, migrated `db` and spawns its background work:
/// the email worker (SMTP when `config.smtp_url` is set, otherwise `.eml` files in
/// `data_dir/mail/`), the digest scheduler, and the fan-out of the bus's `live`
/// events to this replica's `Subscribe` streams. Everything stops on `shutdown`.
///
/// `relay_wake` is the outbox relay's wake-up (kit's `events::relay::Wake`): the
/// event handler pokes it after committing `notification.created` rows. The relay
/// itself is the caller's to run, on this same `db`.
///
/// Must run inside the Tokio runtime (the SMTP pool spawns a task when built).
pub async fn start(
    db: Db,
    config: NotificationConfig,
    data_dir: PathBuf,
    verifier: TokenVerifier,
    live: broadcast::Receiver<Arc<Envelope>>,
    relay_wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<NotificationParts> {
    let from: lettre::message::Mailbox = config
        .mail_from
        .parse()
        .with_context(|| format!("mail sender `{}`", config.mail_from))?;
    let mailer: Arc<dyn email::Mailer> = match &config.smtp_url {
        Some(url) => Arc::new(email::SmtpMailer::new(url, from)?),
        None => Arc::new(email::MailboxMailer::new(data_dir.join("mail"), from)),
    };
    let email_wake = Arc::new(Notify::new());
    let hub = live::Hub::default();

    let worker = email::EmailWorker::new(
        db.clone(),
        mailer,
        email::RetryPolicy {
            attempts: config.email_attempts,
            base: config.email_retry_base,
        },
    );
    let digest = digest::DigestScheduler::new(db.clone(), config.digest_cron, email_wake.clone());
    let tasks = vec![
        tokio::spawn(worker.run(email_wake.clone(), shutdown.clone())),
        tokio::spawn(digest.run(shutdown.clone())),
        tokio::spawn(live::run_live_fanout(hub.clone(), live, shutdown.clone())),
        tokio::spawn(agora_kit::events::inbox::prune_forever(
            db.clone(),
            shutdown.clone(),
        )),
    ];

    Ok(NotificationParts {
        api: NotificationApi::new(store::Store::new(db.clone()), verifier, hub, shutdown),
        handler: Arc::new(EventHandler::new(db, email_wake, relay_wake)),
        tasks,
    })
}
