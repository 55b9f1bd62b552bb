//! The gRPC API, called through the generated trait as tonic would.

use std::sync::Arc;
use std::time::Duration;

use agora_notification::live::run_live_fanout;
use agora_proto::notification::v1 as pb;
use futures::StreamExt;
use pb::notification_service_server::NotificationService;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TestService, request, user_id};
use crate::on_both_backends;

on_both_backends!(
    the_feed_is_newest_first_with_the_unread_count_and_pages,
    marking_read_touches_only_the_callers_notifications,
    preferences_start_at_the_defaults_and_round_trip,
    bad_preferences_are_field_violations,
    every_rpc_requires_a_token,
    subscribe_replays_what_came_after_last_event_id_then_streams_live,
);

async fn list(
    app: &TestService,
    name: &str,
    limit: i32,
    offset: i32,
) -> pb::ListNotificationsResponse {
    app.api
        .list_notifications(request(
            &user_id(name),
            pb::ListNotificationsRequest { limit, offset },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn the_feed_is_newest_first_with_the_unread_count_and_pages(app: TestService) {
    for name in ["alice", "bob", "carol", "dave"] {
        app.register(name).await;
    }
    for follower in ["bob", "carol", "dave"] {
        app.follow(follower, "alice").await;
    }

    let all = list(&app, "alice", 0, 0).await;
    let actors: Vec<&str> = all.notifications.iter().map(|n| n.actor.as_str()).collect();
    assert_eq!(actors, ["dave", "carol", "bob"]);
    assert_eq!(all.unread_count, 3);
    let first = &all.notifications[0];
    assert_eq!(first.kind, i32::from(pb::NotificationKind::Followed));
    assert!(!first.read && first.created_at.is_some());

    let page = list(&app, "alice", 1, 1).await;
    assert_eq!(page.notifications.len(), 1);
    assert_eq!(page.notifications[0].actor, "carol");
    assert_eq!(page.unread_count, 3, "the count is of all, not the page");

    let err = app
        .api
        .list_notifications(request(
            &user_id("alice"),
            pb::ListNotificationsRequest {
                limit: 101,
                offset: -1,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn marking_read_touches_only_the_callers_notifications(app: TestService) {
    for name in ["alice", "bob", "carol"] {
        app.register(name).await;
    }
    app.follow("bob", "alice").await;
    app.follow("carol", "alice").await;
    app.follow("alice", "bob").await;
    let alice_ids = app.notification_ids("alice").await;
    let bob_ids = app.notification_ids("bob").await;

    // alice names one of hers and one of bob's: only hers changes.
    app.api
        .mark_notifications_read(request(
            &user_id("alice"),
            pb::MarkNotificationsReadRequest {
                ids: vec![alice_ids[0].clone(), bob_ids[0].clone()],
            },
        ))
        .await
        .unwrap();
    assert_eq!(list(&app, "alice", 0, 0).await.unread_count, 1);
    assert_eq!(list(&app, "bob", 0, 0).await.unread_count, 1);

    // No ids: all of hers.
    app.api
        .mark_notifications_read(request(
            &user_id("alice"),
            pb::MarkNotificationsReadRequest { ids: vec![] },
        ))
        .await
        .unwrap();
    let alice = list(&app, "alice", 0, 0).await;
    assert_eq!(alice.unread_count, 0);
    assert!(alice.notifications.iter().all(|n| n.read));
    assert_eq!(list(&app, "bob", 0, 0).await.unread_count, 1);

    let err = app
        .api
        .mark_notifications_read(request(
            &user_id("alice"),
            pb::MarkNotificationsReadRequest {
                ids: vec!["not-an-id".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn preferences_start_at_the_defaults_and_round_trip(app: TestService) {
    let alice = user_id("alice");
    let defaults = app
        .api
        .get_preferences(request(&alice, pb::GetPreferencesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert_eq!(defaults.kinds.len(), 4);
    assert!(defaults.kinds.iter().all(|k| k.in_app && !k.email));
    assert_eq!(defaults.time_zone, "UTC");
    assert_eq!(defaults.quiet_hours_start, "");

    let wanted = pb::Preferences {
        kinds: vec![pb::KindPreference {
            kind: pb::NotificationKind::Favorited.into(),
            in_app: false,
            email: true,
        }],
        time_zone: "Europe/Paris".into(),
        quiet_hours_start: "22:00".into(),
        quiet_hours_end: "07:30".into(),
    };
    let updated = app
        .api
        .update_preferences(request(
            &alice,
            pb::UpdatePreferencesRequest {
                preferences: Some(wanted),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    let stored = app
        .api
        .get_preferences(request(&alice, pb::GetPreferencesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert_eq!(stored, updated);
    assert_eq!(stored.time_zone, "Europe/Paris");
    assert_eq!(
        (
            stored.quiet_hours_start.as_str(),
            stored.quiet_hours_end.as_str()
        ),
        ("22:00", "07:30")
    );
    let favorited = stored
        .kinds
        .iter()
        .find(|k| k.kind == i32::from(pb::NotificationKind::Favorited))
        .unwrap();
    assert!(!favorited.in_app && favorited.email);
    // Someone else still has the defaults.
    let bob = app
        .api
        .get_preferences(request(&user_id("bob"), pb::GetPreferencesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert_eq!(bob, defaults);
}

async fn bad_preferences_are_field_violations(app: TestService) {
    let err = app
        .api
        .update_preferences(request(
            &user_id("alice"),
            pb::UpdatePreferencesRequest {
                preferences: Some(pb::Preferences {
                    kinds: vec![],
                    time_zone: "Mars/Olympus_Mons".into(),
                    quiet_hours_start: "7am".into(),
                    quiet_hours_end: "08:00".into(),
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["timeZone", "quietHoursStart"]);
    // Nothing was stored.
    assert_eq!(app.count("SELECT COUNT(*) FROM preference").await, 0);

    let fixed = app
        .api
        .update_preferences(request(
            &user_id("alice"),
            pb::UpdatePreferencesRequest {
                preferences: Some(pb::Preferences {
                    time_zone: "+02:00".into(),
                    ..Default::default()
                }),
            },
        ))
        .await;
    assert!(fixed.is_ok(), "fixed offsets are zones too");
}

async fn every_rpc_requires_a_token(app: TestService) {
    let codes = [
        app.api
            .list_notifications(tonic::Request::new(Default::default()))
            .await
            .unwrap_err()
            .code(),
        app.api
            .mark_notifications_read(tonic::Request::new(Default::default()))
            .await
            .unwrap_err()
            .code(),
        app.api
            .get_preferences(tonic::Request::new(Default::default()))
            .await
            .unwrap_err()
            .code(),
        app.api
            .update_preferences(tonic::Request::new(Default::default()))
            .await
            .unwrap_err()
            .code(),
        app.api
            .subscribe(tonic::Request::new(Default::default()))
            .await
            .err()
            .unwrap()
            .code(),
    ];
    assert!(
        codes.iter().all(|c| *c == Code::Unauthenticated),
        "{codes:?}"
    );
}

type Live = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::SubscribeResponse, tonic::Status>> + Send>,
>;

/// The stream's next notification, failing the test after 5 s.
async fn next(stream: &mut Live) -> pb::Notification {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an item within 5 s")
        .expect("the stream is open")
        .unwrap()
        .notification
        .unwrap()
}

async fn subscribe_replays_what_came_after_last_event_id_then_streams_live(app: TestService) {
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        app.register(name).await;
    }
    app.follow("bob", "alice").await;
    app.follow("carol", "alice").await;
    app.follow("dave", "alice").await;
    let ids = app.notification_ids("alice").await;
    // The live side is the relay's job in production: here the outbox rows are
    // published onto a broadcast channel by hand.
    let (live_tx, live_rx) = tokio::sync::broadcast::channel(64);
    tokio::spawn(run_live_fanout(
        app.hub.clone(),
        live_rx,
        app.shutdown.clone(),
    ));

    let mut req = request(&user_id("alice"), pb::SubscribeRequest {});
    req.metadata_mut()
        .insert("last-event-id", ids[0].parse().unwrap());
    let mut stream = app.api.subscribe(req).await.unwrap().into_inner();

    // Replay: what came after the last seen id, oldest first.
    assert_eq!(next(&mut stream).await.id, ids[1]);
    assert_eq!(next(&mut stream).await.id, ids[2]);

    // Live: a new follow, announced through the bus.
    let already = app.announced().await.len();
    app.follow("erin", "alice").await;
    for envelope in app.announced().await.into_iter().skip(already) {
        live_tx.send(Arc::new(envelope)).unwrap();
    }
    let live = next(&mut stream).await;
    assert_eq!(live.actor, "erin");
    assert_eq!(live.text, "erin started following you");

    // Replayed notifications that also arrive live are not sent twice.
    for envelope in app.announced().await {
        live_tx.send(Arc::new(envelope)).unwrap();
    }
    let quiet = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");

    // Shutdown ends the stream.
    app.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends on shutdown");
    assert!(end.is_none());
}
