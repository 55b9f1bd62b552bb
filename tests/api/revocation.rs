//! Revocation reaches every token (ADR 11): once a session ends, its access
//! token is refused over REST and gRPC within a second and its live streams
//! close; a role change applies to tokens already issued; a deleted account's
//! tokens stop working.

use std::future::Future;
use std::time::Duration;

use agora_proto::post::v1::GetFeedRequest;
use agora_proto::post::v1::post_service_client::PostServiceClient;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use crate::helpers::{self, TestApp, User};

crate::on_every_bus!(
    a_logged_out_sessions_token_and_stream_die_within_a_second,
    log_out_everywhere_ends_every_session_but_no_one_elses,
    a_role_change_reaches_tokens_already_issued,
    a_deleted_accounts_tokens_are_refused,
    a_restarted_replica_still_refuses_a_revoked_token,
);

/// The same check with every target a server of its own on PostgreSQL and
/// RabbitMQ: the revocation crosses the broker to the other processes.
#[tokio::test]
async fn revocation_reaches_separate_targets_within_a_second() {
    if helpers::postgres_url().is_none() || helpers::amqp_url().is_none() {
        eprintln!("AGORA_TEST_DATABASE_URL or AGORA_TEST_AMQP_URL not set: split case skipped");
        return;
    }
    let namespace = format!("agora-test-{}", uuid::Uuid::now_v7().simple());
    let mut app = helpers::spawn_split(&namespace).await;
    logout_is_felt_everywhere(&app).await;
    app.stop().await;
    helpers::remove_namespace(&namespace).await;
}

/// Polls `check` until it holds; the revocation promise is one second.
async fn within_a_second<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the post service accepts `token` over plain gRPC (its feed needs one).
async fn grpc_accepts(app: &TestApp, token: &str) -> bool {
    let mut posts = PostServiceClient::connect(app.grpc_url()).await.unwrap();
    let mut request = tonic::Request::new(GetFeedRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match posts.get_feed(request).await {
        Ok(_) => true,
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
            false
        }
    }
}

async fn rest_accepts(app: &TestApp, token: &str) -> bool {
    let answer = app.get("/api/user", Some(token)).await;
    match answer.status {
        200 => true,
        401 => false,
        other => panic!("GET /api/user answered {other}: {:?}", answer.body),
    }
}

async fn logout_is_felt_everywhere(app: &TestApp) {
    let alice = app.signed_up("alice").await;
    let stream = app
        .open(
            "GET",
            "/api/notifications/stream",
            Some(&alice.token),
            &[("accept", "text/event-stream")],
            Bytes::new(),
        )
        .await;
    assert_eq!(stream.status(), 200);
    let mut body = stream.into_body();
    assert!(rest_accepts(app, &alice.token).await);
    assert!(grpc_accepts(app, &alice.token).await);

    let out = app.logout(&alice.refresh).await;
    assert_eq!(out.status, 204, "{:?}", out.body);

    let closed = tokio::spawn(async move {
        // Heartbeats and a final error event may come first; the body then ends.
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    });
    within_a_second("refusal over REST", || async {
        !rest_accepts(app, &alice.token).await
    })
    .await;
    within_a_second("refusal over gRPC", || async {
        !grpc_accepts(app, &alice.token).await
    })
    .await;
    tokio::time::timeout(Duration::from_secs(1), closed)
        .await
        .expect("the session's live stream closes within a second")
        .unwrap();
}

async fn a_logged_out_sessions_token_and_stream_die_within_a_second(app: TestApp) {
    logout_is_felt_everywhere(&app).await;
}

async fn log_out_everywhere_ends_every_session_but_no_one_elses(app: TestApp) {
    let phone = app.signed_up("alice").await;
    let laptop = app.login("alice@agora.test", "password123").await;
    let laptop_token = laptop.body["user"]["token"].as_str().unwrap().to_owned();
    let bob = app.signed_up("bob").await;

    let out = app
        .post("/api/auth/logout-all", Some(&laptop_token), json!({}))
        .await;

    assert_eq!(out.status, 204, "{:?}", out.body);
    within_a_second("both of alice's sessions refused", || async {
        !rest_accepts(&app, &phone.token).await && !rest_accepts(&app, &laptop_token).await
    })
    .await;
    assert_eq!(app.refresh(&phone.refresh).await.status, 401);
    assert!(rest_accepts(&app, &bob.token).await);
    let again = app
        .post("/api/auth/logout-all", Some(&laptop_token), json!({}))
        .await;
    assert_eq!(again.status, 401, "{:?}", again.body);
}

async fn a_role_change_reaches_tokens_already_issued(app: TestApp) {
    let bob = app.signed_up("bob").await;
    let admin_token = app.with_role(&bob, "bob", "ROLE_ADMIN").await;
    assert_eq!(
        app.get("/api/admin/users", Some(&admin_token)).await.status,
        200
    );
    let root = app.login("root@agora.test", "password123").await;
    let root_token = root.body["user"]["token"].as_str().unwrap().to_owned();

    let demoted = app
        .put(
            "/api/admin/users/bob/role",
            Some(&root_token),
            json!({"role": "ROLE_USER"}),
        )
        .await;

    assert_eq!(demoted.status, 200, "{:?}", demoted.body);
    within_a_second("the demoted admin token refused", || async {
        app.get("/api/admin/users", Some(&admin_token)).await.status == 403
    })
    .await;
    // The token still signs bob in: only its role changed.
    assert!(rest_accepts(&app, &admin_token).await);
}

async fn a_deleted_accounts_tokens_are_refused(app: TestApp) {
    let carol: User = app.signed_up("carol").await;
    let root = app.register("root", "root@agora.test", "password123").await;
    let root_token = root.body["user"]["token"].as_str().unwrap().to_owned();

    let deleted = app
        .delete("/api/admin/users/carol", Some(&root_token))
        .await;

    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    within_a_second("the deleted account's token refused", || async {
        !grpc_accepts(&app, &carol.token).await
    })
    .await;
    assert_eq!(app.refresh(&carol.refresh).await.status, 401);
}

async fn a_restarted_replica_still_refuses_a_revoked_token(app: TestApp) {
    let alice = app.signed_up("alice").await;
    let out = app.logout(&alice.refresh).await;
    assert_eq!(out.status, 204, "{:?}", out.body);

    let app = app.restart().await;

    // The very first request: the snapshot must be in before any token passes.
    assert!(!rest_accepts(&app, &alice.token).await);
    assert!(!grpc_accepts(&app, &alice.token).await);
}
