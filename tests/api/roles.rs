//! Who may edit and delete whose content: one test per rule and role
//! (anonymous, owner, other user, moderator, admin).

use serde_json::json;

use crate::helpers::{TestApp, User};

crate::on_both_backends!(
    only_the_author_edits_an_article,
    the_author_a_moderator_or_an_admin_deletes_an_article,
    comments_are_deleted_by_their_author_the_article_author_or_staff,
);

struct Cast {
    owner: User,
    other: User,
    moderator: String,
    admin: String,
}

async fn cast(app: &TestApp) -> Cast {
    let owner = app.signed_up("owner").await;
    let other = app.signed_up("other").await;
    let moderator_user = app.signed_up("moderator").await;
    let admin_user = app.signed_up("admin").await;
    let moderator = app
        .with_role(&moderator_user, "moderator", "ROLE_MODERATOR")
        .await;
    let admin = app.with_role(&admin_user, "admin", "ROLE_ADMIN").await;
    Cast {
        owner,
        other,
        moderator,
        admin,
    }
}

async fn only_the_author_edits_an_article(app: TestApp) {
    let cast = cast(&app).await;
    let slug = app.article(&cast.owner.token, "Mine", &[]).await;
    let path = format!("/api/articles/{slug}");
    let edit = |token: Option<String>| {
        let app = &app;
        let path = path.clone();
        async move {
            app.put(
                &path,
                token.as_deref(),
                json!({"article": {"body": "edited"}}),
            )
            .await
            .status
        }
    };

    assert_eq!(edit(None).await, 401, "anonymous");
    assert_eq!(
        edit(Some(cast.other.token.clone())).await,
        403,
        "other user"
    );
    assert_eq!(edit(Some(cast.moderator.clone())).await, 403, "moderator");
    assert_eq!(edit(Some(cast.admin.clone())).await, 403, "admin");
    assert_eq!(edit(Some(cast.owner.token.clone())).await, 200, "owner");
}

async fn the_author_a_moderator_or_an_admin_deletes_an_article(app: TestApp) {
    let cast = cast(&app).await;
    let delete = |slug: String, token: Option<String>| {
        let app = &app;
        async move {
            app.delete(&format!("/api/articles/{slug}"), token.as_deref())
                .await
                .status
        }
    };
    let a = app.article(&cast.owner.token, "For anonymous", &[]).await;
    let b = app.article(&cast.owner.token, "For other", &[]).await;
    let c = app.article(&cast.owner.token, "For owner", &[]).await;
    let d = app.article(&cast.owner.token, "For moderator", &[]).await;
    let e = app.article(&cast.owner.token, "For admin", &[]).await;

    assert_eq!(delete(a, None).await, 401, "anonymous");
    assert_eq!(
        delete(b, Some(cast.other.token.clone())).await,
        403,
        "other user"
    );
    assert_eq!(
        delete(c, Some(cast.owner.token.clone())).await,
        204,
        "owner"
    );
    assert_eq!(
        delete(d, Some(cast.moderator.clone())).await,
        204,
        "moderator"
    );
    assert_eq!(delete(e, Some(cast.admin.clone())).await, 204, "admin");
    assert_eq!(
        app.get("/api/articles", None).await.body["articlesCount"],
        2
    );
}

async fn comments_are_deleted_by_their_author_the_article_author_or_staff(app: TestApp) {
    let cast = cast(&app).await;
    let commenter = app.signed_up("commenter").await;
    let slug = app.article(&cast.owner.token, "Discussed", &[]).await;
    let comments = format!("/api/articles/{slug}/comments");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let c = app
            .post(
                &comments,
                Some(&commenter.token),
                json!({"comment": {"body": "a comment"}}),
            )
            .await;
        assert_eq!(c.status, 201, "{:?}", c.body);
        ids.push(c.body["comment"]["id"].as_i64().unwrap());
    }
    let delete = |id: i64, token: Option<String>| {
        let app = &app;
        let comments = comments.clone();
        async move {
            app.delete(&format!("{comments}/{id}"), token.as_deref())
                .await
                .status
        }
    };

    assert_eq!(delete(ids[0], None).await, 401, "anonymous");
    assert_eq!(
        delete(ids[0], Some(cast.other.token.clone())).await,
        403,
        "other user"
    );
    assert_eq!(
        delete(ids[0], Some(commenter.token.clone())).await,
        204,
        "comment author"
    );
    assert_eq!(
        delete(ids[1], Some(cast.owner.token.clone())).await,
        204,
        "article author"
    );
    assert_eq!(
        delete(ids[2], Some(cast.moderator.clone())).await,
        204,
        "moderator"
    );
    assert_eq!(delete(ids[3], Some(cast.admin.clone())).await, 204, "admin");
    assert_eq!(
        delete(ids[0], Some(commenter.token.clone())).await,
        404,
        "already gone"
    );
    let left = app.get(&comments, None).await;
    assert_eq!(left.body["comments"].as_array().unwrap().len(), 1);
    assert_eq!(left.body["comments"][0]["id"], ids[4]);
}
