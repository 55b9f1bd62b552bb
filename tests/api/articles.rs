//! Articles: Conduit's list, feed and CRUD, slugs, drafts, caching, idempotency.

use serde_json::json;

use crate::helpers::{Answer, TestApp};

crate::on_both_backends!(
    a_new_article_answers_201_with_sorted_tags_and_its_author,
    articles_count_is_the_total_match_not_the_page,
    lists_filter_by_tag_author_and_favorited,
    the_feed_shows_followed_authors_only,
    equal_titles_created_together_get_distinct_slugs,
    a_new_title_moves_the_article_to_a_new_slug,
    drafts_are_seen_by_their_author_only_until_published,
    a_read_after_a_write_is_never_stale,
    author_profile_changes_reach_articles_within_a_second,
    follows_reach_the_authors_of_articles_within_a_second,
    a_retried_create_with_the_same_idempotency_key_creates_nothing,
    an_idempotency_key_reused_with_another_body_is_422,
    bad_paging_and_bad_articles_are_422,
);

crate::on_every_bus!(a_deleted_accounts_articles_comments_and_favorites_go_with_it);

async fn a_new_article_answers_201_with_sorted_tags_and_its_author(app: TestApp) {
    let jake = app.signed_up("jake").await;

    let answer = app
        .post(
            "/api/articles",
            Some(&jake.token),
            json!({"article": {"title": "How to train your dragon", "description": "Ever wonder how?",
                    "body": "Very carefully.", "tagList": ["training", "dragons", "training"]}}),
        )
        .await;

    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let article = &answer.body["article"];
    assert_eq!(article["slug"], "how-to-train-your-dragon");
    assert_eq!(article["tagList"], json!(["dragons", "training"]));
    assert_eq!(article["favorited"], false);
    assert_eq!(article["favoritesCount"], 0);
    assert_eq!(article["author"]["username"], "jake");
    assert_eq!(article["author"]["following"], false);
    assert!(article["createdAt"].as_str().unwrap().contains('.'));
    let tags = app.get("/api/tags", None).await;
    assert_eq!(tags.body["tags"], json!(["dragons", "training"]));
}

async fn articles_count_is_the_total_match_not_the_page(app: TestApp) {
    let jake = app.signed_up("jake").await;
    for i in 0..3 {
        app.article(&jake.token, &format!("Post {i}"), &[]).await;
    }

    let first = app.get("/api/articles?limit=2", None).await;
    let rest = app.get("/api/articles?limit=2&offset=2", None).await;

    assert_eq!(first.body["articlesCount"], 3);
    assert_eq!(first.body["articles"].as_array().unwrap().len(), 2);
    assert_eq!(first.body["articles"][0]["title"], "Post 2", "newest first");
    assert_eq!(rest.body["articles"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["articlesCount"], 3);
}

async fn lists_filter_by_tag_author_and_favorited(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let anna = app.signed_up("anna").await;
    app.article(&jake.token, "Dragons", &["dragons"]).await;
    let cats = app.article(&anna.token, "Cats", &["cats"]).await;
    app.post(
        &format!("/api/articles/{cats}/favorite"),
        Some(&jake.token),
        json!({}),
    )
    .await;

    let titles = |a: crate::helpers::Answer| -> Vec<String> {
        a.body["articles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        titles(app.get("/api/articles?tag=dragons", None).await),
        ["Dragons"]
    );
    assert_eq!(
        titles(app.get("/api/articles?author=anna", None).await),
        ["Cats"]
    );
    assert_eq!(
        titles(app.get("/api/articles?favorited=jake", None).await),
        ["Cats"]
    );
    assert!(titles(app.get("/api/articles?author=nobody", None).await).is_empty());
    let favorited = app
        .get("/api/articles?favorited=jake", Some(&jake.token))
        .await;
    assert_eq!(favorited.body["articles"][0]["favorited"], true);
    assert_eq!(favorited.body["articles"][0]["favoritesCount"], 1);
}

async fn the_feed_shows_followed_authors_only(app: TestApp) {
    let reader = app.signed_up("reader").await;
    let followed = app.signed_up("followed").await;
    let other = app.signed_up("other").await;
    app.article(&followed.token, "Followed post", &[]).await;
    app.article(&other.token, "Other post", &[]).await;
    app.post(
        "/api/profiles/followed/follow",
        Some(&reader.token),
        json!({}),
    )
    .await;

    let feed = app.get("/api/articles/feed", Some(&reader.token)).await;
    let anonymous = app.get("/api/articles/feed", None).await;

    assert_eq!(feed.status, 200, "{:?}", feed.body);
    assert_eq!(feed.body["articlesCount"], 1);
    assert_eq!(feed.body["articles"][0]["title"], "Followed post");
    assert_eq!(feed.body["articles"][0]["author"]["following"], true);
    assert_eq!(anonymous.status, 401);
}

async fn equal_titles_created_together_get_distinct_slugs(app: TestApp) {
    let jake = app.signed_up("jake").await;

    let creates = (0..5).map(|_| app.article(&jake.token, "Same title", &[]));
    let mut slugs = futures::future::join_all(creates).await;

    slugs.sort();
    slugs.dedup();
    assert_eq!(slugs.len(), 5, "{slugs:?}");
    assert!(
        slugs.iter().all(|s| s.starts_with("same-title")),
        "{slugs:?}"
    );
    assert!(slugs.contains(&"same-title".to_owned()));
}

async fn a_new_title_moves_the_article_to_a_new_slug(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let slug = app.article(&jake.token, "Old title", &[]).await;

    let updated = app
        .put(
            &format!("/api/articles/{slug}"),
            Some(&jake.token),
            json!({"article": {"title": "New title"}}),
        )
        .await;

    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(updated.body["article"]["slug"], "new-title");
    assert_eq!(app.get("/api/articles/old-title", None).await.status, 404);
    assert_eq!(app.get("/api/articles/new-title", None).await.status, 200);
}

async fn drafts_are_seen_by_their_author_only_until_published(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let anna = app.signed_up("anna").await;
    app.post("/api/profiles/jake/follow", Some(&anna.token), json!({}))
        .await;
    let draft = app
        .post(
            "/api/articles",
            Some(&jake.token),
            json!({"article": {"title": "Draft", "description": "d", "body": "b", "tagList": ["secret"], "published": false}}),
        )
        .await;
    let slug = draft.body["article"]["slug"].as_str().unwrap().to_owned();
    let path = format!("/api/articles/{slug}");

    assert_eq!(draft.body["article"]["published"], false);
    assert_eq!(app.get(&path, Some(&jake.token)).await.status, 200);
    assert_eq!(app.get(&path, Some(&anna.token)).await.status, 404);
    assert_eq!(app.get(&path, None).await.status, 404);
    assert_eq!(
        app.get("/api/articles", None).await.body["articlesCount"],
        0
    );
    assert_eq!(
        app.get("/api/articles/feed", Some(&anna.token)).await.body["articlesCount"],
        0
    );
    assert_eq!(app.get("/api/tags", None).await.body["tags"], json!([]));
    assert_eq!(
        app.post(
            &format!("{path}/comments"),
            Some(&anna.token),
            json!({"comment": {"body": "hi"}})
        )
        .await
        .status,
        404
    );

    let published = app
        .put(
            &path,
            Some(&jake.token),
            json!({"article": {"published": true}}),
        )
        .await;

    assert_eq!(published.status, 200, "{:?}", published.body);
    assert_eq!(app.get(&path, Some(&anna.token)).await.status, 200);
    assert_eq!(
        app.get("/api/articles/feed", Some(&anna.token)).await.body["articlesCount"],
        1
    );
    assert_eq!(
        app.get("/api/tags", None).await.body["tags"],
        json!(["secret"])
    );
}

async fn a_read_after_a_write_is_never_stale(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let anna = app.signed_up("anna").await;
    let slug = app.article(&jake.token, "Cached", &["one"]).await;
    let path = format!("/api/articles/{slug}");
    assert_eq!(app.get(&path, None).await.body["article"]["body"], "b");
    assert_eq!(
        app.get("/api/tags", None).await.body["tags"],
        json!(["one"])
    );

    app.put(
        &path,
        Some(&jake.token),
        json!({"article": {"body": "changed"}}),
    )
    .await;
    let after_update = app.get(&path, None).await;
    app.post(&format!("{path}/favorite"), Some(&anna.token), json!({}))
        .await;
    let after_favorite = app.get(&path, Some(&anna.token)).await;
    app.article(&jake.token, "Another", &["two"]).await;
    let tags = app.get("/api/tags", None).await;
    app.delete(&path, Some(&jake.token)).await;
    let after_delete = app.get(&path, None).await;

    assert_eq!(after_update.body["article"]["body"], "changed");
    assert_eq!(after_favorite.body["article"]["favoritesCount"], 1);
    assert_eq!(after_favorite.body["article"]["favorited"], true);
    let mut tags: Vec<String> = serde_json::from_value(tags.body["tags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, ["one", "two"]);
    assert_eq!(after_delete.status, 404);
    let by_tag = app.get("/api/articles?tag=one", None).await;
    assert_eq!(
        by_tag.body["articlesCount"], 0,
        "kept counts follow deletes"
    );
    assert_eq!(
        app.get("/api/tags", None).await.body["tags"],
        json!(["two"])
    );
    assert_eq!(
        app.get("/api/articles", None).await.body["articlesCount"],
        1
    );
}

async fn author_profile_changes_reach_articles_within_a_second(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let slug = app.article(&jake.token, "Profile test", &[]).await;
    let path = format!("/api/articles/{slug}");

    app.put(
        "/api/user",
        Some(&jake.token),
        json!({"user": {"bio": "new bio", "username": "jacob"}}),
    )
    .await;
    let article = app
        .get_until(&path, None, |a| {
            a.body["article"]["author"]["bio"] == "new bio"
        })
        .await;

    assert_eq!(article.body["article"]["author"]["username"], "jacob");
}

async fn follows_reach_the_authors_of_articles_within_a_second(app: TestApp) {
    let author = app.signed_up("author").await;
    let fan = app.signed_up("fan").await;
    let slug = app.article(&author.token, "Followed", &[]).await;
    let path = format!("/api/articles/{slug}");
    let following = |a: &Answer| a.body["article"]["author"]["following"].clone();
    assert_eq!(following(&app.get(&path, Some(&fan.token)).await), false);

    app.post("/api/profiles/author/follow", Some(&fan.token), json!({}))
        .await;
    app.get_until(&path, Some(&fan.token), |a| following(a) == true)
        .await;
    let list = app
        .get("/api/articles?author=author", Some(&fan.token))
        .await;
    let anonymous = app.get(&path, None).await;
    app.delete("/api/profiles/author/follow", Some(&fan.token))
        .await;
    app.get_until(&path, Some(&fan.token), |a| following(a) == false)
        .await;

    assert_eq!(list.body["articles"][0]["author"]["following"], true);
    assert_eq!(following(&anonymous), false);
}

async fn a_retried_create_with_the_same_idempotency_key_creates_nothing(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let body = json!({"article": {"title": "Once", "description": "d", "body": "b"}}).to_string();
    let auth = format!("Token {}", jake.token);
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "k-1")];

    let first = app
        .send("POST", "/api/articles", None, &headers, body.clone())
        .await;
    let retry = app
        .send("POST", "/api/articles", None, &headers, body)
        .await;
    let comment = json!({"comment": {"body": "hello"}}).to_string();
    let path = format!(
        "/api/articles/{}/comments",
        first.body["article"]["slug"].as_str().unwrap()
    );
    let c1 = app
        .send("POST", &path, None, &headers, comment.clone())
        .await;
    let c2 = app.send("POST", &path, None, &headers, comment).await;

    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(retry.status, 201, "{:?}", retry.body);
    assert_eq!(retry.body["article"]["slug"], first.body["article"]["slug"]);
    assert_eq!(
        app.get("/api/articles", None).await.body["articlesCount"],
        1
    );
    assert_eq!(c1.status, 201, "{:?}", c1.body);
    assert_eq!(c2.body["comment"]["id"], c1.body["comment"]["id"]);
    assert_eq!(
        app.get(&path, None).await.body["comments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn an_idempotency_key_reused_with_another_body_is_422(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let auth = format!("Token {}", jake.token);
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "k-2")];

    app.send(
        "POST",
        "/api/articles",
        None,
        &headers,
        json!({"article": {"title": "One", "description": "d", "body": "b"}}).to_string(),
    )
    .await;
    let other = app
        .send(
            "POST",
            "/api/articles",
            None,
            &headers,
            json!({"article": {"title": "Two", "description": "d", "body": "b"}}).to_string(),
        )
        .await;

    assert_eq!(other.status, 422, "{:?}", other.body);
    assert!(
        other.body["errors"]["Idempotency-Key"].is_array(),
        "{:?}",
        other.body
    );
    assert_eq!(
        app.get("/api/articles", None).await.body["articlesCount"],
        1
    );
}

async fn bad_paging_and_bad_articles_are_422(app: TestApp) {
    let jake = app.signed_up("jake").await;

    let limit = app.get("/api/articles?limit=1000", None).await;
    let offset = app.get("/api/articles?offset=-1", None).await;
    let deep = app.get("/api/articles?offset=10001", None).await;
    let blank = app
        .post(
            "/api/articles",
            Some(&jake.token),
            json!({"article": {"title": " "}}),
        )
        .await;
    let anonymous = app
        .post(
            "/api/articles",
            None,
            json!({"article": {"title": "t", "description": "d", "body": "b"}}),
        )
        .await;

    assert_eq!(limit.status, 422);
    assert_eq!(offset.status, 422);
    assert_eq!(deep.status, 422, "{:?}", deep.body);
    assert!(deep.body["errors"]["offset"].is_array(), "{:?}", deep.body);
    assert_eq!(blank.status, 422);
    for field in ["title", "description", "body"] {
        assert!(
            blank.body["errors"][field].is_array(),
            "{field}: {:?}",
            blank.body
        );
    }
    assert_eq!(anonymous.status, 401);
}

/// Polls until `check` holds: account deletion reaches the post service as an event.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn a_deleted_accounts_articles_comments_and_favorites_go_with_it(app: TestApp) {
    let root = app.signed_up("root").await;
    let leaver = app.signed_up("leaver").await;
    let stayer = app.signed_up("stayer").await;
    let theirs = app.article(&leaver.token, "Leaving soon", &["bye"]).await;
    let mine = app.article(&stayer.token, "Staying", &["hi"]).await;
    app.post(
        &format!("/api/articles/{mine}/comments"),
        Some(&leaver.token),
        json!({"comment": {"body": "so long"}}),
    )
    .await;
    app.post(
        &format!("/api/articles/{mine}/favorite"),
        Some(&leaver.token),
        json!({}),
    )
    .await;

    // Cached before the deletion: the cache must still not serve the old count.
    let cached = app.get(&format!("/api/articles/{mine}"), None).await;
    assert_eq!(cached.body["article"]["favoritesCount"], 1);
    let deleted = app
        .delete("/api/admin/users/leaver", Some(&root.token))
        .await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);

    eventually("the leaver's article to go", async || {
        app.get(&format!("/api/articles/{theirs}"), None)
            .await
            .status
            == 404
    })
    .await;
    eventually("the leaver's comment and favorite to go", async || {
        let comments = app
            .get(&format!("/api/articles/{mine}/comments"), None)
            .await;
        let article = app.get(&format!("/api/articles/{mine}"), None).await;
        comments.body["comments"]
            .as_array()
            .is_some_and(Vec::is_empty)
            && article.body["article"]["favoritesCount"] == 0
    })
    .await;
    assert_eq!(
        app.get("/api/articles", None).await.body["articlesCount"],
        1
    );
    assert_eq!(
        app.get("/api/articles?tag=bye", None).await.body["articlesCount"],
        0
    );
    assert_eq!(app.get("/api/tags", None).await.body["tags"], json!(["hi"]));
}
