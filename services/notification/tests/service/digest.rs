//! The digest: claimed once per user and period, whatever the number of replicas.

use std::sync::Arc;

use agora_notification::cron::Cron;
use agora_notification::digest::DigestScheduler;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;

use crate::helpers::TestService;
use crate::on_both_backends;

on_both_backends!(
    two_schedulers_firing_for_the_same_period_queue_one_digest,
    the_next_digest_covers_only_what_came_since_the_last,
    read_notifications_and_users_without_any_get_no_digest,
);

fn scheduler(app: &TestService) -> DigestScheduler {
    DigestScheduler::new(
        app.db.clone(),
        "0 9 * * *".parse::<Cron>().unwrap(),
        Arc::new(Notify::new()),
    )
}

fn digests(jobs: &[crate::helpers::EmailJob]) -> Vec<&crate::helpers::EmailJob> {
    jobs.iter().filter(|j| j.kind == "digest").collect()
}

async fn two_schedulers_firing_for_the_same_period_queue_one_digest(app: TestService) {
    for name in ["alice", "bob", "carol"] {
        app.register(name).await;
    }
    app.follow("bob", "alice").await;
    app.follow("carol", "alice").await;
    let fired = Timestamp::now() + SignedDuration::from_secs(1);
    let (a, b) = (scheduler(&app), scheduler(&app));

    let (claimed_a, claimed_b) = tokio::join!(a.fire(fired), b.fire(fired));

    assert_eq!(claimed_a.unwrap() + claimed_b.unwrap(), 1);
    let alice = app.emails_of("alice").await;
    let digest = digests(&alice);
    assert_eq!(digest.len(), 1);
    assert_eq!(
        digest[0].subject,
        "Your agora digest: 2 unread notifications"
    );
    assert!(digest[0].body.contains("- carol started following you"));
    assert!(digest[0].body.contains("- bob started following you"));
    // A third replica late to the same firing changes nothing either.
    assert_eq!(scheduler(&app).fire(fired).await.unwrap(), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM digest_run").await, 1);
}

async fn the_next_digest_covers_only_what_came_since_the_last(app: TestService) {
    for name in ["alice", "bob", "carol"] {
        app.register(name).await;
    }
    app.follow("bob", "alice").await;
    let first = Timestamp::now() + SignedDuration::from_mins(1);
    assert_eq!(scheduler(&app).fire(first).await.unwrap(), 1);

    // Nothing new: no second digest, though the first is still unread.
    let second = first + SignedDuration::from_hours(24);
    assert_eq!(scheduler(&app).fire(second).await.unwrap(), 0);

    // Something new a day later (its clock moved forward by hand): a digest of
    // just that.
    app.follow("carol", "alice").await;
    let later = (second + SignedDuration::from_hours(1)).as_microsecond();
    sqlx::query("UPDATE notification SET created_at = $1 WHERE actor_username = 'carol'")
        .bind(later)
        .execute(app.db.pool())
        .await
        .unwrap();
    let third = second + SignedDuration::from_hours(24);
    assert_eq!(scheduler(&app).fire(third).await.unwrap(), 1);
    let alice = app.emails_of("alice").await;
    let latest = digests(&alice)[1];
    assert_eq!(latest.subject, "Your agora digest: 1 unread notification");
    assert!(latest.body.contains("carol"));
    assert!(!latest.body.contains("bob"));
}

async fn read_notifications_and_users_without_any_get_no_digest(app: TestService) {
    use agora_proto::notification::v1 as pb;
    use pb::notification_service_server::NotificationService;
    for name in ["alice", "bob"] {
        app.register(name).await;
    }
    app.follow("bob", "alice").await;
    app.api
        .mark_notifications_read(crate::helpers::request(
            &crate::helpers::user_id("alice"),
            pb::MarkNotificationsReadRequest { ids: vec![] },
        ))
        .await
        .unwrap();

    let fired = Timestamp::now() + SignedDuration::from_secs(1);
    assert_eq!(scheduler(&app).fire(fired).await.unwrap(), 0);
}
