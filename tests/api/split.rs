//! The targets as separate servers (`agora serve --target …` per process): every
//! call between services crosses a gRPC socket, as in a Kubernetes deployment,
//! where the single process calls its own services in place (ADR 8).

use serde_json::json;

use crate::helpers::{self, TestApp};

#[tokio::test]
async fn separate_targets_serve_accounts_articles_comments_and_notifications() {
    if helpers::postgres_url().is_none() || helpers::amqp_url().is_none() {
        eprintln!("AGORA_TEST_DATABASE_URL or AGORA_TEST_AMQP_URL not set: split case skipped");
        return;
    }
    let namespace = format!("agora-test-{}", uuid::Uuid::now_v7().simple());
    let mut app = helpers::spawn_split(&namespace).await;
    whole_flow(&app).await;
    app.stop().await;
    helpers::remove_namespace(&namespace).await;
}

async fn whole_flow(app: &TestApp) {
    let author = app.signed_up("author").await;
    let reader = app.signed_up("reader").await;
    app.post(
        "/api/profiles/author/follow",
        Some(&reader.token),
        json!({}),
    )
    .await;
    let slug = app
        .article(&author.token, "Across sockets", &["split"])
        .await;
    let comment = app
        .post(
            &format!("/api/articles/{slug}/comments"),
            Some(&reader.token),
            json!({"comment": {"body": "seen from another process"}}),
        )
        .await;

    let article = app
        .get_until(&format!("/api/articles/{slug}"), Some(&reader.token), |a| {
            a.body["article"]["author"]["following"] == true
        })
        .await;
    let feed = app.get("/api/articles/feed", Some(&reader.token)).await;
    let notified = app
        .get_until("/api/notifications", Some(&author.token), |a| {
            a.body["unreadCount"] == 2
        })
        .await;

    assert_eq!(comment.status, 201, "{:?}", comment.body);
    assert_eq!(article.body["article"]["author"]["username"], "author");
    assert_eq!(article.body["article"]["tagList"], json!(["split"]));
    assert_eq!(feed.body["articlesCount"], 1);
    assert_eq!(notified.status, 200);
}
