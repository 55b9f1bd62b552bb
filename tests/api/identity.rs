//! Registration, sign-in, the current user and profiles (Conduit's Auth and
//! Profiles surface).

use serde_json::json;

use crate::helpers::TestApp;

crate::on_both_backends!(
    registering_answers_201_with_the_conduit_user_and_a_refresh_token,
    registration_lists_every_invalid_field_in_the_conduit_shape,
    an_email_is_taken_whatever_its_case,
    a_taken_username_is_reported_on_the_username_field,
    login_with_a_wrong_password_or_unknown_email_is_401,
    the_current_user_needs_a_valid_token_in_either_scheme,
    updating_the_user_changes_only_the_fields_sent,
    a_new_password_replaces_the_old_one,
    profiles_show_following_for_the_viewer,
    following_an_unknown_user_is_404_and_yourself_422,
    no_response_ever_carries_a_password_hash,
    a_locked_account_answers_429_with_retry_after_even_to_the_right_password,
);

async fn registering_answers_201_with_the_conduit_user_and_a_refresh_token(app: TestApp) {
    let answer = app.register("jake", "Jake@Jake.jake", "jakejake").await;

    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let user = &answer.body["user"];
    assert_eq!(user["email"], "jake@jake.jake");
    assert_eq!(user["username"], "jake");
    assert_eq!(user["bio"], serde_json::Value::Null);
    assert!(user.as_object().unwrap().contains_key("bio"));
    assert!(user.as_object().unwrap().contains_key("image"));
    assert_eq!(user["token"].as_str().unwrap().split('.').count(), 3);
    assert!(user["refreshToken"].as_str().unwrap().len() >= 40);
}

async fn registration_lists_every_invalid_field_in_the_conduit_shape(app: TestApp) {
    let answer = app.register("", "not-an-email", "short").await;

    assert_eq!(answer.status, 422, "{:?}", answer.body);
    let errors = answer.body["errors"].as_object().expect("errors object");
    for field in ["username", "email", "password"] {
        let messages = errors[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} in {errors:?}"));
        assert!(!messages.is_empty());
    }
}

async fn an_email_is_taken_whatever_its_case(app: TestApp) {
    app.signed_up("first").await;

    let answer = app
        .register("second", "FIRST@agora.test", "password123")
        .await;

    assert!(matches!(answer.status, 409 | 422), "{:?}", answer.body);
    assert_eq!(answer.body["errors"]["email"][0], "has already been taken");
}

async fn a_taken_username_is_reported_on_the_username_field(app: TestApp) {
    app.signed_up("taken").await;

    let answer = app
        .register("taken", "other@agora.test", "password123")
        .await;

    assert!(matches!(answer.status, 409 | 422), "{:?}", answer.body);
    assert_eq!(
        answer.body["errors"]["username"][0],
        "has already been taken"
    );
}

async fn login_with_a_wrong_password_or_unknown_email_is_401(app: TestApp) {
    app.signed_up("alice").await;

    let wrong = app.login("alice@agora.test", "not-the-password").await;
    let unknown = app.login("nobody@agora.test", "password123").await;
    let right = app.login("ALICE@agora.test", "password123").await;

    assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    assert_eq!(unknown.status, 401, "{:?}", unknown.body);
    assert_eq!(
        wrong.body, unknown.body,
        "answers must not tell which was wrong"
    );
    assert_eq!(right.status, 200, "{:?}", right.body);
    assert_eq!(right.body["user"]["username"], "alice");
}

async fn the_current_user_needs_a_valid_token_in_either_scheme(app: TestApp) {
    let alice = app.signed_up("alice").await;

    let none = app.get("/api/user", None).await;
    let token = app.get("/api/user", Some(&alice.token)).await;
    let bearer = app
        .send(
            "GET",
            "/api/user",
            None,
            &[("authorization", &format!("Bearer {}", alice.token))],
            "",
        )
        .await;
    let mut forged = alice.token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let forged = app.get("/api/user", Some(&forged)).await;
    let garbage = app.get("/api/user", Some("not.a.jwt")).await;

    assert_eq!(none.status, 401);
    assert_eq!(token.status, 200, "{:?}", token.body);
    assert_eq!(token.body["user"]["token"], alice.token.as_str());
    assert_eq!(bearer.status, 200);
    assert_eq!(forged.status, 401);
    assert_eq!(garbage.status, 401);
    assert!(garbage.body["errors"].is_object(), "{:?}", garbage.body);
}

async fn updating_the_user_changes_only_the_fields_sent(app: TestApp) {
    let alice = app.signed_up("alice").await;

    let answer = app
        .put(
            "/api/user",
            Some(&alice.token),
            json!({"user": {"bio": "I like to skateboard", "image": "https://i.example/a.png"}}),
        )
        .await;
    let again = app
        .put(
            "/api/user",
            Some(&alice.token),
            json!({"user": {"email": "alice@agora.test"}}),
        )
        .await;

    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(again.body["user"]["bio"], "I like to skateboard");
    assert_eq!(again.body["user"]["image"], "https://i.example/a.png");
    assert_eq!(again.body["user"]["username"], "alice");
    let bad = app
        .put(
            "/api/user",
            Some(&alice.token),
            json!({"user": {"image": "javascript:alert(1)"}}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body["errors"]["image"].is_array(), "{:?}", bad.body);
}

async fn a_new_password_replaces_the_old_one(app: TestApp) {
    let alice = app.signed_up("alice").await;

    let changed = app
        .put(
            "/api/user",
            Some(&alice.token),
            json!({"user": {"password": "a-new-secret"}}),
        )
        .await;

    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(
        app.login("alice@agora.test", "password123").await.status,
        401
    );
    assert_eq!(
        app.login("alice@agora.test", "a-new-secret").await.status,
        200
    );
}

async fn profiles_show_following_for_the_viewer(app: TestApp) {
    let fan = app.signed_up("fan").await;
    app.signed_up("celeb").await;

    let anonymous = app.get("/api/profiles/celeb", None).await;
    let followed = app
        .post("/api/profiles/celeb/follow", Some(&fan.token), json!({}))
        .await;
    let seen = app.get("/api/profiles/celeb", Some(&fan.token)).await;
    let unfollowed = app
        .delete("/api/profiles/celeb/follow", Some(&fan.token))
        .await;

    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.body["profile"]["following"], false);
    assert_eq!(anonymous.body["profile"]["username"], "celeb");
    assert!(
        anonymous.body["profile"]
            .as_object()
            .unwrap()
            .contains_key("bio")
    );
    assert_eq!(followed.status, 200, "{:?}", followed.body);
    assert_eq!(followed.body["profile"]["following"], true);
    assert_eq!(seen.body["profile"]["following"], true);
    assert_eq!(unfollowed.body["profile"]["following"], false);
    assert_eq!(
        app.get("/api/profiles/celeb", Some(&fan.token)).await.body["profile"]["following"],
        false
    );
}

async fn following_an_unknown_user_is_404_and_yourself_422(app: TestApp) {
    let fan = app.signed_up("fan").await;

    let unknown = app
        .post("/api/profiles/ghost/follow", Some(&fan.token), json!({}))
        .await;
    let hostile = app.get("/api/profiles/%3Cscript%3E", None).await;
    let myself = app
        .post("/api/profiles/fan/follow", Some(&fan.token), json!({}))
        .await;
    let anonymous = app.post("/api/profiles/fan/follow", None, json!({})).await;

    assert_eq!(unknown.status, 404);
    assert_eq!(hostile.status, 404);
    assert_eq!(myself.status, 422);
    assert_eq!(anonymous.status, 401);
}

async fn no_response_ever_carries_a_password_hash(app: TestApp) {
    let root = app.register("root", "root@agora.test", "password123").await;
    let token = root.body["user"]["token"].as_str().unwrap().to_owned();

    let bodies = [
        root.raw.clone(),
        app.login("root@agora.test", "password123").await.raw,
        app.get("/api/user", Some(&token)).await.raw,
        app.get("/api/profiles/root", None).await.raw,
        app.get("/api/admin/users", Some(&token)).await.raw,
    ];

    for body in bodies {
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("argon2"), "{text}");
        assert!(!text.to_lowercase().contains("password"), "{text}");
    }
}

async fn a_locked_account_answers_429_with_retry_after_even_to_the_right_password(app: TestApp) {
    app.signed_up("jake").await;
    for _ in 0..10 {
        let wrong = app.login("jake@agora.test", "not-the-password").await;
        assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    }

    let locked = app.login("JAKE@agora.test", "password123").await;

    assert_eq!(locked.status, 429, "{:?}", locked.body);
    let wait: u64 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 800 && wait <= 900, "{wait}");
    assert!(
        locked.body["errors"]["body"][0].is_string(),
        "{:?}",
        locked.body
    );
}
