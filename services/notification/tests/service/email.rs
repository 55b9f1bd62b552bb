//! The email worker: delivery, backoff, the dead state, and the mailbox folder.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_kit::events::bus::BoxFuture;
use agora_notification::email::{EmailWorker, Mailer, OutgoingEmail, RetryPolicy};
use agora_notification::{NotificationConfig, start};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Backend, TestService, fresh_db, user_id, verifier};
use crate::on_both_backends;

on_both_backends!(
    a_failing_email_is_retried_with_backoff_then_dead_after_three_attempts,
    a_delivered_email_is_marked_sent_once,
    email_for_a_vanished_account_is_dead_without_a_send,
);

/// Fails every delivery, counting them.
#[derive(Default)]
struct Failing(AtomicUsize);

impl Mailer for Failing {
    fn send<'a>(&'a self, _: &'a OutgoingEmail) -> BoxFuture<'a, anyhow::Result<()>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(anyhow::anyhow!("connection refused")) })
    }
}

/// Accepts every delivery, keeping them.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<OutgoingEmail>>);

impl Mailer for Recording {
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, anyhow::Result<()>> {
        self.0.lock().unwrap().push(email.clone());
        Box::pin(async { Ok(()) })
    }
}

const SECOND: i64 = 1_000_000;

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base: Duration::from_secs(2),
    }
}

async fn a_failing_email_is_retried_with_backoff_then_dead_after_three_attempts(app: TestService) {
    app.register("alice").await;
    let mailer = Arc::new(Failing::default());
    let worker = EmailWorker::new(app.db.clone(), mailer.clone(), policy());
    let t0 = agora_kit::db::now_micros();

    // First attempt fails: the next waits the base, 2 s.
    assert_eq!(worker.run_due(t0).await.unwrap().retried, 1);
    let job = &app.emails_of("alice").await[0];
    assert_eq!((job.attempts, job.status.as_str()), (1, "ready"));
    assert_eq!(job.next_attempt_at, t0 + 2 * SECOND);
    assert_eq!(job.last_error.as_deref(), Some("connection refused"));

    // Not due before then.
    assert_eq!(worker.run_due(t0 + SECOND).await.unwrap().total(), 0);

    // Second attempt fails: the next waits twice the base, 4 s.
    let t1 = t0 + 2 * SECOND;
    assert_eq!(worker.run_due(t1).await.unwrap().retried, 1);
    let job = &app.emails_of("alice").await[0];
    assert_eq!(job.attempts, 2);
    assert_eq!(job.next_attempt_at, t1 + 4 * SECOND);
    assert_eq!(worker.run_due(t1 + 3 * SECOND).await.unwrap().total(), 0);

    // Third attempt fails: that was the last.
    assert_eq!(worker.run_due(t1 + 4 * SECOND).await.unwrap().dead, 1);
    let job = &app.emails_of("alice").await[0];
    assert_eq!((job.attempts, job.status.as_str()), (3, "dead"));

    // A dead job is never tried again.
    assert_eq!(worker.run_due(t0 + 3600 * SECOND).await.unwrap().total(), 0);
    assert_eq!(mailer.0.load(Ordering::SeqCst), 3);
}

async fn a_delivered_email_is_marked_sent_once(app: TestService) {
    app.register("alice").await;
    let mailer = Arc::new(Recording::default());
    let worker = EmailWorker::new(app.db.clone(), mailer.clone(), policy());
    let now = agora_kit::db::now_micros();

    assert_eq!(worker.run_due(now).await.unwrap().sent, 1);
    assert_eq!(
        worker.run_due(now + 3600 * SECOND).await.unwrap().total(),
        0
    );

    let sent = mailer.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "alice@example.com");
    let job = &app.emails_of("alice").await[0];
    assert_eq!((job.status.as_str(), job.attempts), ("sent", 1));
    assert_eq!(sent[0].id, job.id);
}

async fn email_for_a_vanished_account_is_dead_without_a_send(app: TestService) {
    app.register("alice").await;
    // The account goes without its pending mail (as if the projection lost it).
    sqlx::query("DELETE FROM account WHERE user_id = $1")
        .bind(user_id("alice"))
        .execute(app.db.pool())
        .await
        .unwrap();
    let mailer = Arc::new(Recording::default());
    let worker = EmailWorker::new(app.db.clone(), mailer.clone(), policy());

    assert_eq!(
        worker
            .run_due(agora_kit::db::now_micros())
            .await
            .unwrap()
            .dead,
        1
    );
    assert!(mailer.0.lock().unwrap().is_empty());
}

/// The whole service as the binary starts it: registration leads to a welcome
/// `.eml` in the mailbox folder, with the worker woken by the handler.
#[tokio::test]
async fn the_welcome_email_lands_in_the_mailbox_folder() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(Backend::Sqlite, dir.path()).await;
    let shutdown = CancellationToken::new();
    let (_live_tx, live_rx) = tokio::sync::broadcast::channel(16);
    let parts = start(
        db,
        NotificationConfig::default(),
        dir.path().to_path_buf(),
        verifier(),
        live_rx,
        Arc::new(tokio::sync::Notify::new()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let consumer = parts.consumer();
    assert_eq!(consumer.name, "notification");
    assert_eq!(consumer.bindings, ["user.*", "post.*"]);

    let registered = agora_kit::events::envelope(
        agora_kit::events::types::USER_REGISTERED,
        "user",
        &agora_proto::events::v1::UserRegistered {
            user_id: user_id("alice"),
            username: "alice".into(),
            email: "alice@example.com".into(),
        },
    );
    consumer.handler.handle(&registered).await.unwrap();

    let mail_dir = dir.path().join("mail");
    let eml = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let found = std::fs::read_dir(&mail_dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().ends_with(".eml"));
            if let Some(entry) = found {
                return entry.path();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a .eml file within 10 s");
    let text = std::fs::read_to_string(&eml).unwrap();
    assert!(text.contains("To: alice@example.com"), "{text}");
    assert!(text.contains("Subject: Welcome to agora, alice"), "{text}");
    assert_eq!(
        std::fs::read_dir(&mail_dir).unwrap().count(),
        1,
        "no temp files left"
    );

    shutdown.cancel();
    for task in parts.tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("background tasks stop on shutdown")
            .unwrap();
    }
}

/// The smallest SMTP server lettre will talk to: accepts one message and hands
/// back its DATA.
async fn fake_smtp_server() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 fake ESMTP\r\n").await.unwrap();
        let mut data = String::new();
        let mut in_data = false;
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if in_data {
                if line == "." {
                    in_data = false;
                    write.write_all(b"250 queued\r\n").await.unwrap();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(std::mem::take(&mut data));
                    }
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 fake\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
                _ => b"250 ok\r\n",
            };
            write.write_all(reply).await.unwrap();
        }
    });
    (port, rx)
}

#[tokio::test]
async fn the_smtp_mailer_delivers_through_an_smtp_server() {
    let (port, received) = fake_smtp_server().await;
    let url = agora_kit::config::Secret::new(format!("smtp://127.0.0.1:{port}"));
    let mailer = agora_notification::email::SmtpMailer::new(
        &url,
        "agora <no-reply@agora.invalid>".parse().unwrap(),
    )
    .unwrap();

    mailer
        .send(&OutgoingEmail {
            id: "job-1".into(),
            to: "alice@example.com".into(),
            subject: "Hello".into(),
            body: "Over SMTP\n".into(),
        })
        .await
        .unwrap();

    let data = tokio::time::timeout(Duration::from_secs(5), received)
        .await
        .expect("the server got a message")
        .unwrap();
    assert!(data.contains("Subject: Hello"), "{data}");
    assert!(data.contains("To: alice@example.com"), "{data}");
    assert!(data.contains("Over SMTP"), "{data}");
}
