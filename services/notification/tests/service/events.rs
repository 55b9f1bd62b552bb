//! What each consumed event does to the database.

use agora_kit::events::{self, HandleError, types};
use agora_notification::domain::Kind;
use agora_proto::events::v1 as ev;
use agora_proto::notification::v1 as pb;
use pb::notification_service_server::NotificationService;

use crate::helpers::{TestService, request, user_id};
use crate::on_both_backends;

on_both_backends!(
    registering_creates_the_account_and_queues_a_welcome_email,
    an_updated_account_names_later_notifications,
    deleting_a_user_forgets_their_account_follows_preferences_and_feed,
    a_follow_notifies_the_followee_and_an_unfollow_only_updates_the_projection,
    a_new_article_notifies_every_follower_in_one_statement,
    comments_and_favorites_notify_the_article_author,
    nobody_is_notified_of_their_own_action,
    a_duplicated_delivery_creates_one_notification,
    a_kind_turned_off_in_the_app_creates_no_notification,
    a_kind_turned_on_by_email_queues_an_email_even_for_followers,
    quiet_hours_hold_email_until_they_end,
    unknown_types_are_ignored_and_bad_payloads_are_poison,
    an_actor_not_yet_registered_is_retried,
    the_relay_is_woken_only_when_notifications_were_announced,
);

async fn registering_creates_the_account_and_queues_a_welcome_email(app: TestService) {
    app.register("alice").await;

    assert_eq!(
        app.count("SELECT COUNT(*) FROM account WHERE username = 'alice'")
            .await,
        1
    );
    let emails = app.emails_of("alice").await;
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].kind, "welcome");
    assert_eq!(emails[0].status, "ready");
    assert!(emails[0].subject.contains("alice"));
}

async fn an_updated_account_names_later_notifications(app: TestService) {
    app.register("alice").await;
    app.register("bob").await;
    let update = events::envelope(
        types::USER_UPDATED,
        "user",
        &ev::UserUpdated {
            user_id: user_id("bob"),
            username: "robert".into(),
            email: "robert@example.com".into(),
            bio: None,
            image: None,
        },
    );
    app.deliver(&update).await.unwrap();

    app.follow("bob", "alice").await;

    let feed = app.notifications_of("alice").await;
    assert_eq!(feed[0].1, "robert");
    assert_eq!(feed[0].2, "robert started following you");
}

async fn deleting_a_user_forgets_their_account_follows_preferences_and_feed(app: TestService) {
    for name in ["alice", "bob", "carol"] {
        app.register(name).await;
    }
    app.follow("bob", "alice").await;
    app.follow("alice", "carol").await;
    app.api
        .update_preferences(request(
            &user_id("alice"),
            pb::UpdatePreferencesRequest {
                preferences: Some(pb::Preferences::default()),
            },
        ))
        .await
        .unwrap();

    let deleted = events::envelope(
        types::USER_DELETED,
        "user",
        &ev::UserDeleted {
            user_id: user_id("alice"),
            username: "alice".into(),
        },
    );
    app.deliver(&deleted).await.unwrap();

    let alice = user_id("alice");
    for (table, column) in [
        ("account", "user_id"),
        ("follower", "followee_id"),
        ("follower", "follower_id"),
        ("preference", "user_id"),
        ("preference_schedule", "user_id"),
        ("notification", "user_id"),
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = '{alice}'");
        assert_eq!(app.count(&sql).await, 0, "{table}.{column}");
    }
    // Mail not yet sent to a deleted account is dropped with it.
    assert!(app.emails_of("alice").await.is_empty());
    // Others keep theirs.
    assert_eq!(app.notifications_of("carol").await.len(), 1);
}

async fn a_follow_notifies_the_followee_and_an_unfollow_only_updates_the_projection(
    app: TestService,
) {
    app.register("alice").await;
    app.register("bob").await;

    app.follow("bob", "alice").await;

    assert_eq!(
        app.notifications_of("alice").await,
        [(
            Kind::Followed.as_str().to_owned(),
            "bob".to_owned(),
            "bob started following you".to_owned()
        )]
    );
    assert!(app.notifications_of("bob").await.is_empty());
    assert_eq!(app.count("SELECT COUNT(*) FROM follower").await, 1);

    let unfollow = events::envelope(
        types::USER_UNFOLLOWED,
        "user",
        &ev::UserUnfollowed {
            follower_id: user_id("bob"),
            followee_id: user_id("alice"),
        },
    );
    app.deliver(&unfollow).await.unwrap();

    assert_eq!(app.count("SELECT COUNT(*) FROM follower").await, 0);
    assert_eq!(app.notifications_of("alice").await.len(), 1);
}

async fn a_new_article_notifies_every_follower_in_one_statement(app: TestService) {
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        app.register(name).await;
    }
    for follower in ["bob", "carol", "dave"] {
        app.follow(follower, "alice").await;
    }
    let followed_announcements = app.announced().await.len();

    app.publish("alice", "rust-in-2026").await;

    let mut ids = Vec::new();
    for follower in ["bob", "carol", "dave"] {
        let feed = app.notifications_of(follower).await;
        assert_eq!(
            feed,
            [(
                "article_published".to_owned(),
                "alice".to_owned(),
                "alice published \"Title of rust-in-2026\"".to_owned()
            )],
            "{follower}"
        );
        ids.extend(app.notification_ids(follower).await);
    }
    assert!(app.notifications_of("erin").await.is_empty());
    // One INSERT ... SELECT made them: the ids share the batch's prefix and differ
    // only in the row number.
    assert!(ids.iter().all(|id| id[..30] == ids[0][..30]), "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| uuid::Uuid::parse_str(id).unwrap().get_version_num() == 7)
    );
    // Each is announced for the live streams, with the notification as stored.
    let announced = app.announced().await;
    let created: Vec<ev::NotificationCreated> = announced[followed_announcements..]
        .iter()
        .map(|e| events::payload(e).unwrap())
        .collect();
    assert_eq!(created.len(), 3);
    for c in &created {
        let n = c.notification.as_ref().unwrap();
        assert!(ids.contains(&n.id));
        assert_eq!(n.kind, i32::from(pb::NotificationKind::ArticlePublished));
        assert_eq!(n.article_slug, "rust-in-2026");
        assert_eq!(n.actor, "alice");
    }
}

async fn comments_and_favorites_notify_the_article_author(app: TestService) {
    app.register("alice").await;
    app.register("bob").await;

    app.comment("bob", "alice", "my-post").await;
    app.favorite("bob", "alice", "my-post").await;

    assert_eq!(
        app.notifications_of("alice").await,
        [
            (
                "commented".to_owned(),
                "bob".to_owned(),
                "bob commented on \"Title of my-post\"".to_owned()
            ),
            (
                "favorited".to_owned(),
                "bob".to_owned(),
                "bob favorited \"Title of my-post\"".to_owned()
            ),
        ]
    );
    assert_eq!(app.announced().await.len(), 2);
}

async fn nobody_is_notified_of_their_own_action(app: TestService) {
    app.register("alice").await;
    app.register("bob").await;
    app.follow("bob", "alice").await;
    let before = app.announced().await.len();

    app.comment("alice", "alice", "my-post").await;
    app.favorite("alice", "alice", "my-post").await;
    app.follow("alice", "alice").await;
    app.publish("alice", "my-post").await;

    assert_eq!(
        app.notifications_of("alice").await.len(),
        1,
        "only bob's follow"
    );
    assert_eq!(app.notifications_of("bob").await.len(), 1, "the article");
    assert_eq!(app.announced().await.len(), before + 1);
}

async fn a_duplicated_delivery_creates_one_notification(app: TestService) {
    app.register("alice").await;
    app.register("bob").await;
    let follow = app.follow("bob", "alice").await;

    app.deliver(&follow).await.unwrap();
    app.deliver(&follow).await.unwrap();

    assert_eq!(app.notifications_of("alice").await.len(), 1);
    assert_eq!(app.announced().await.len(), 1);
}

async fn a_kind_turned_off_in_the_app_creates_no_notification(app: TestService) {
    for name in ["alice", "bob", "carol"] {
        app.register(name).await;
    }
    app.follow("bob", "alice").await;
    app.follow("carol", "alice").await;
    let off = |kind: pb::NotificationKind| pb::KindPreference {
        kind: kind.into(),
        in_app: false,
        email: false,
    };
    for name in ["alice", "bob"] {
        let kinds = vec![
            off(pb::NotificationKind::Commented),
            off(pb::NotificationKind::ArticlePublished),
        ];
        app.api
            .update_preferences(request(
                &user_id(name),
                pb::UpdatePreferencesRequest {
                    preferences: Some(pb::Preferences {
                        kinds,
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap();
    }

    app.comment("bob", "alice", "my-post").await;
    app.favorite("bob", "alice", "my-post").await;
    app.publish("alice", "my-post").await;

    let alice: Vec<String> = app
        .notifications_of("alice")
        .await
        .into_iter()
        .map(|n| n.0)
        .collect();
    assert_eq!(alice, ["followed", "followed", "favorited"]);
    assert!(app.notifications_of("bob").await.is_empty());
    assert_eq!(app.notifications_of("carol").await.len(), 1);
    // Nothing was emailed: email is off by default and was left off.
    assert!(
        app.emails_of("alice")
            .await
            .iter()
            .all(|e| e.kind == "welcome")
    );
}

async fn a_kind_turned_on_by_email_queues_an_email_even_for_followers(app: TestService) {
    for name in ["alice", "bob", "carol"] {
        app.register(name).await;
    }
    app.follow("bob", "alice").await;
    app.follow("carol", "alice").await;
    // bob wants new articles by email only.
    app.api
        .update_preferences(request(
            &user_id("bob"),
            pb::UpdatePreferencesRequest {
                preferences: Some(pb::Preferences {
                    kinds: vec![pb::KindPreference {
                        kind: pb::NotificationKind::ArticlePublished.into(),
                        in_app: false,
                        email: true,
                    }],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let before = agora_kit::db::now_micros();

    app.publish("alice", "my-post").await;

    assert!(app.notifications_of("bob").await.is_empty());
    let bob: Vec<_> = app
        .emails_of("bob")
        .await
        .into_iter()
        .filter(|e| e.kind == "notification")
        .collect();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].subject, "alice published \"Title of my-post\"");
    assert!(
        bob[0].next_attempt_at >= before && bob[0].next_attempt_at <= agora_kit::db::now_micros()
    );
    assert!(
        app.emails_of("carol")
            .await
            .iter()
            .all(|e| e.kind == "welcome")
    );
}

async fn quiet_hours_hold_email_until_they_end(app: TestService) {
    app.register("alice").await;
    app.register("bob").await;
    // Quiet from an hour ago until two hours from now, UTC.
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let hh_mm = |z: &jiff::Zoned| format!("{:02}:{:02}", z.hour(), z.minute());
    let start = now
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let end = now
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    app.api
        .update_preferences(request(
            &user_id("alice"),
            pb::UpdatePreferencesRequest {
                preferences: Some(pb::Preferences {
                    kinds: vec![pb::KindPreference {
                        kind: pb::NotificationKind::Followed.into(),
                        in_app: true,
                        email: true,
                    }],
                    time_zone: "UTC".into(),
                    quiet_hours_start: hh_mm(&start),
                    quiet_hours_end: hh_mm(&end),
                }),
            },
        ))
        .await
        .unwrap();

    app.follow("bob", "alice").await;

    // The in-app notification is immediate; the email waits for the end.
    assert_eq!(app.notifications_of("alice").await.len(), 1);
    let email = app
        .emails_of("alice")
        .await
        .into_iter()
        .find(|e| e.kind == "notification")
        .expect("a notification email");
    let end_minute = end
        .with()
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .unwrap()
        .timestamp()
        .as_microsecond();
    assert_eq!(email.next_attempt_at, end_minute);
}

async fn unknown_types_are_ignored_and_bad_payloads_are_poison(app: TestService) {
    let unknown = events::envelope(
        "user.promoted",
        "user",
        &ev::UserDeleted {
            user_id: "x".into(),
            username: "x".into(),
        },
    );
    app.deliver(&unknown).await.unwrap();
    // Types the service binds but does not act on are ignored the same way.
    let updated = events::envelope(
        types::ARTICLE_UPDATED,
        "post",
        &ev::ArticleUpdated::default(),
    );
    app.deliver(&updated).await.unwrap();

    let mut mislabelled = events::envelope(
        types::USER_REGISTERED,
        "user",
        &ev::UserDeleted {
            user_id: "x".into(),
            username: "x".into(),
        },
    );
    assert!(matches!(
        app.deliver(&mislabelled).await,
        Err(HandleError::Poison(_))
    ));
    mislabelled.payload = None;
    assert!(matches!(
        app.deliver(&mislabelled).await,
        Err(HandleError::Poison(_))
    ));
    assert_eq!(app.count("SELECT COUNT(*) FROM inbox").await, 0);
}

async fn an_actor_not_yet_registered_is_retried(app: TestService) {
    app.register("alice").await;
    let follow = events::envelope(
        types::USER_FOLLOWED,
        "user",
        &ev::UserFollowed {
            follower_id: user_id("late"),
            followee_id: user_id("alice"),
        },
    );

    assert!(matches!(
        app.deliver(&follow).await,
        Err(HandleError::Retry(_))
    ));
    // Nothing committed, not even the inbox claim: the redelivery does the work.
    assert_eq!(app.count("SELECT COUNT(*) FROM follower").await, 0);
    app.register("late").await;
    app.deliver(&follow).await.unwrap();
    assert_eq!(app.notifications_of("alice").await.len(), 1);
}

async fn the_relay_is_woken_only_when_notifications_were_announced(app: TestService) {
    let woken = |app: &TestService| {
        let wake = app.relay_wake.clone();
        async move {
            tokio::time::timeout(std::time::Duration::from_millis(50), wake.notified())
                .await
                .is_ok()
        }
    };
    app.register("alice").await;
    app.register("bob").await;
    assert!(!woken(&app).await, "registrations announce nothing");

    app.follow("bob", "alice").await;

    assert!(woken(&app).await);
}
