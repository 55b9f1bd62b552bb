//! Notifications end to end: the events of follows, articles, comments and
//! favorites become the right notifications for the right people, live on SSE and
//! gRPC, through whichever bus the process runs (in-process here; RabbitMQ and
//! PostgreSQL when configured).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp};

crate::on_every_bus!(
    each_action_notifies_the_right_people_and_never_the_actor,
    notifications_are_marked_read_one_by_one_or_all_at_once,
    preferences_turn_a_kind_off,
    a_new_notification_arrives_live_over_server_sent_events,
    a_new_notification_arrives_live_over_grpc,
);

/// Polls the caller's notifications until `unread` have arrived (events are
/// asynchronous); the list and the count are read apart, so both must agree.
async fn notifications_until(app: &TestApp, token: &str, unread: usize) -> Answer {
    for _ in 0..100 {
        let answer = app.get("/api/notifications", Some(token)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        if answer.body["unreadCount"] == unread
            && answer.body["notifications"].as_array().map(Vec::len) == Some(unread)
        {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = app.get("/api/notifications", Some(token)).await;
    panic!(
        "{unread} notifications did not arrive in time: {}",
        last.body
    );
}

fn kinds(answer: &Answer) -> Vec<String> {
    answer.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn each_action_notifies_the_right_people_and_never_the_actor(app: TestApp) {
    let author = app.signed_up("author").await;
    let fan = app.signed_up("fan").await;
    let other = app.signed_up("other").await;
    app.post("/api/profiles/author/follow", Some(&fan.token), json!({}))
        .await;
    app.post("/api/profiles/author/follow", Some(&other.token), json!({}))
        .await;
    // Follows and articles come from different services, whose events may reach
    // the notification service in either order: a follower is notified of the
    // articles published after their follow was seen there.
    notifications_until(&app, &author.token, 2).await;

    let slug = app.article(&author.token, "News", &[]).await;
    app.post(
        &format!("/api/articles/{slug}/comments"),
        Some(&fan.token),
        json!({"comment": {"body": "nice"}}),
    )
    .await;
    app.post(
        &format!("/api/articles/{slug}/comments"),
        Some(&author.token),
        json!({"comment": {"body": "thanks"}}),
    )
    .await;
    app.post(
        &format!("/api/articles/{slug}/favorite"),
        Some(&other.token),
        json!({}),
    )
    .await;

    let mine = notifications_until(&app, &author.token, 4).await;
    let mut got = kinds(&mine);
    got.sort();
    assert_eq!(
        got,
        [
            "NOTIFICATION_KIND_COMMENTED",
            "NOTIFICATION_KIND_FAVORITED",
            "NOTIFICATION_KIND_FOLLOWED",
            "NOTIFICATION_KIND_FOLLOWED",
        ],
        "the author's own comment notifies nobody"
    );
    let followers = [&fan, &other];
    for follower in followers {
        let theirs = notifications_until(&app, &follower.token, 1).await;
        assert_eq!(kinds(&theirs), ["NOTIFICATION_KIND_ARTICLE_PUBLISHED"]);
        assert_eq!(
            theirs.body["notifications"][0]["articleSlug"],
            slug.as_str()
        );
        assert_eq!(theirs.body["notifications"][0]["actor"], "author");
    }
    // Nothing more arrives later: each event was applied once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.get("/api/notifications", Some(&author.token))
            .await
            .body["unreadCount"],
        4
    );
}

async fn notifications_are_marked_read_one_by_one_or_all_at_once(app: TestApp) {
    let author = app.signed_up("author").await;
    for name in ["a1", "a2", "a3"] {
        let fan = app.signed_up(name).await;
        app.post("/api/profiles/author/follow", Some(&fan.token), json!({}))
            .await;
    }
    let listed = notifications_until(&app, &author.token, 3).await;
    let first = listed.body["notifications"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let one = app
        .post(
            "/api/notifications/read",
            Some(&author.token),
            json!({"ids": [first]}),
        )
        .await;
    let after_one = app.get("/api/notifications", Some(&author.token)).await;
    let all = app
        .post("/api/notifications/read", Some(&author.token), json!({}))
        .await;
    let after_all = app.get("/api/notifications", Some(&author.token)).await;

    assert_eq!(one.status, 204, "{:?}", one.body);
    assert_eq!(after_one.body["unreadCount"], 2);
    assert_eq!(all.status, 204);
    assert_eq!(after_all.body["unreadCount"], 0);
    assert_eq!(after_all.body["notifications"].as_array().unwrap().len(), 3);
    assert_eq!(app.get("/api/notifications", None).await.status, 401);
}

async fn preferences_turn_a_kind_off(app: TestApp) {
    let author = app.signed_up("author").await;
    let prefs = app
        .get("/api/notifications/preferences", Some(&author.token))
        .await;
    assert_eq!(prefs.status, 200, "{:?}", prefs.body);
    let mut preferences = prefs.body["preferences"].clone();
    for kind in preferences["kinds"].as_array_mut().unwrap() {
        if kind["kind"] == "NOTIFICATION_KIND_FOLLOWED" {
            kind["inApp"] = json!(false);
        }
    }

    let saved = app
        .put(
            "/api/notifications/preferences",
            Some(&author.token),
            json!({"preferences": preferences}),
        )
        .await;
    let fan = app.signed_up("fan").await;
    app.post("/api/profiles/author/follow", Some(&fan.token), json!({}))
        .await;
    let slug = app.article(&author.token, "Quiet", &[]).await;
    app.post(
        &format!("/api/articles/{slug}/favorite"),
        Some(&fan.token),
        json!({}),
    )
    .await;

    assert_eq!(saved.status, 200, "{:?}", saved.body);
    let mine = notifications_until(&app, &author.token, 1).await;
    assert_eq!(
        kinds(&mine),
        ["NOTIFICATION_KIND_FAVORITED"],
        "no FOLLOWED: turned off"
    );
}

async fn a_new_notification_arrives_live_over_server_sent_events(app: TestApp) {
    let author = app.signed_up("author").await;
    let fan = app.signed_up("fan").await;
    let stream = app
        .open(
            "GET",
            "/api/notifications/stream",
            Some(&author.token),
            &[("accept", "text/event-stream")],
            Bytes::new(),
        )
        .await;
    assert_eq!(stream.status(), 200);
    let mut body = stream.into_body();

    let started = std::time::Instant::now();
    app.post("/api/profiles/author/follow", Some(&fan.token), json!({}))
        .await;

    let mut seen = BytesMut::new();
    tokio::time::timeout(Duration::from_secs(1), async {
        while !String::from_utf8_lossy(&seen).contains("NOTIFICATION_KIND_FOLLOWED") {
            let frame = body.frame().await.expect("open").expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.extend_from_slice(&data);
            }
        }
    })
    .await
    .expect("the notification arrives live within a second");
    let text = String::from_utf8_lossy(&seen);
    let event: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .next()
        .unwrap();
    assert_eq!(event["notification"]["actor"], "fan");
    assert!(started.elapsed() < Duration::from_secs(1));
}

async fn a_new_notification_arrives_live_over_grpc(app: TestApp) {
    use agora_proto::notification::v1::SubscribeRequest;
    use agora_proto::notification::v1::notification_service_client::NotificationServiceClient;

    let author = app.signed_up("author").await;
    let fan = app.signed_up("fan").await;
    let mut client = NotificationServiceClient::connect(app.grpc_url())
        .await
        .unwrap();
    let mut request = tonic::Request::new(SubscribeRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", author.token).parse().unwrap(),
    );
    let mut stream = client.subscribe(request).await.unwrap().into_inner();

    app.post("/api/profiles/author/follow", Some(&fan.token), json!({}))
        .await;

    let got = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("the notification arrives live within a second")
        .unwrap()
        .expect("the stream is open");
    let notification = got.notification.unwrap();
    assert_eq!(notification.actor, "fan");
    assert_eq!(
        notification.kind,
        agora_proto::notification::v1::NotificationKind::Followed as i32
    );
}
