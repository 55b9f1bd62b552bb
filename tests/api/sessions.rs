//! Refresh-token rotation, reuse detection, logout, sessions, signing keys.

use serde_json::json;

use crate::helpers::{Backend, TestApp};

crate::on_both_backends!(
    a_refresh_token_works_once_and_returns_a_successor,
    reusing_a_rotated_refresh_token_revokes_the_whole_family,
    two_tabs_refreshing_at_once_both_stay_signed_in,
    logout_ends_the_session,
    sessions_are_listed_and_can_be_revoked_by_their_owner_only,
    the_jwks_publishes_the_signing_key,
    an_expired_token_is_refused,
);

async fn a_refresh_token_works_once_and_returns_a_successor(app: TestApp) {
    let alice = app.signed_up("alice").await;

    let first = app.refresh(&alice.refresh).await;

    assert_eq!(first.status, 200, "{:?}", first.body);
    let token = first.body["token"].as_str().unwrap();
    let next = first.body["refreshToken"].as_str().unwrap();
    assert_ne!(next, alice.refresh);
    assert_eq!(app.get("/api/user", Some(token)).await.status, 200);
    assert_eq!(app.refresh(next).await.status, 200);
}

async fn reusing_a_rotated_refresh_token_revokes_the_whole_family(app: TestApp) {
    let alice = app.signed_up("alice").await;
    let rotated = app.refresh(&alice.refresh).await;
    let successor = rotated.body["refreshToken"].as_str().unwrap().to_owned();
    let token = rotated.body["token"].as_str().unwrap().to_owned();
    // Once the successor has been used, the first token is a replay at any time.
    let third = app.refresh(&successor).await;
    assert_eq!(third.status, 200, "{:?}", third.body);
    let third = third.body["refreshToken"].as_str().unwrap().to_owned();

    let replay = app.refresh(&alice.refresh).await;
    let after = app.refresh(&third).await;

    assert_eq!(replay.status, 401, "{:?}", replay.body);
    assert_eq!(
        after.status, 401,
        "the newest token dies with its family: {:?}",
        after.body
    );
    app.get_until("/api/user", Some(&token), |a| a.status == 401)
        .await;
}

async fn two_tabs_refreshing_at_once_both_stay_signed_in(app: TestApp) {
    let alice = app.signed_up("alice").await;

    let (one, two) = tokio::join!(app.refresh(&alice.refresh), app.refresh(&alice.refresh));

    assert_eq!(one.status, 200, "{:?}", one.body);
    assert_eq!(two.status, 200, "{:?}", two.body);
    assert_eq!(one.body["refreshToken"], two.body["refreshToken"]);
    for tab in [&one, &two] {
        let token = tab.body["token"].as_str().unwrap();
        assert_eq!(app.get("/api/user", Some(token)).await.status, 200);
    }
    let next = app
        .refresh(one.body["refreshToken"].as_str().unwrap())
        .await;
    assert_eq!(next.status, 200, "{:?}", next.body);
    // The successor is used now: the first token no longer gets it.
    assert_eq!(app.refresh(&alice.refresh).await.status, 401);
    let newest = next.body["refreshToken"].as_str().unwrap();
    assert_eq!(app.refresh(newest).await.status, 401);
}

async fn logout_ends_the_session(app: TestApp) {
    let alice = app.signed_up("alice").await;

    let out = app.logout(&alice.refresh).await;

    assert_eq!(out.status, 204, "{:?}", out.body);
    assert!(out.raw.is_empty());
    assert_eq!(app.refresh(&alice.refresh).await.status, 401);
    let blank = app.post("/api/auth/refresh", None, json!({})).await;
    assert_eq!(blank.status, 422);
    assert!(
        blank.body["errors"]["refreshToken"].is_array(),
        "{:?}",
        blank.body
    );
}

async fn sessions_are_listed_and_can_be_revoked_by_their_owner_only(app: TestApp) {
    let alice = app.signed_up("alice").await;
    let laptop = app.login("alice@agora.test", "password123").await;
    let laptop_refresh = laptop.body["user"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mallory = app.signed_up("mallory").await;

    let listed = app.get("/api/auth/sessions", Some(&alice.token)).await;

    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let sessions = listed.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let created = current[0]["createdAt"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('.'), "{created}");
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    let id = other["id"].as_str().unwrap();

    let stolen = app
        .delete(&format!("/api/auth/sessions/{id}"), Some(&mallory.token))
        .await;
    let revoked = app
        .delete(&format!("/api/auth/sessions/{id}"), Some(&alice.token))
        .await;

    assert_eq!(stolen.status, 404);
    assert_eq!(revoked.status, 204);
    assert_eq!(app.refresh(&laptop_refresh).await.status, 401);
    assert_eq!(app.refresh(&alice.refresh).await.status, 200);
}

async fn the_jwks_publishes_the_signing_key(app: TestApp) {
    let alice = app.signed_up("alice").await;

    let jwks = app.get("/.well-known/jwks.json", None).await;

    assert_eq!(jwks.status, 200);
    let key = &jwks.body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    let header = jsonwebtoken::decode_header(&alice.token).unwrap();
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
}

async fn an_expired_token_is_refused(app: TestApp) {
    let alice = app.signed_up("alice").await;
    use base64::Engine;
    let payload = alice.token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let keys_dir = app
        .env
        .get("AGORA_AUTH_KEYS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| app.data_dir.join("keys"));
    let ring = agora_auth::KeyRing::load(&keys_dir, false).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 3600);
    expired["exp"] = json!(now - 1800);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(ring.signing_kid().to_owned());
    let token = jsonwebtoken::encode(&header, &expired, ring.signing_key()).unwrap();
    let mut wrong_audience = claims;
    wrong_audience["aud"] = json!("someone-else");
    let foreign = jsonwebtoken::encode(&header, &wrong_audience, ring.signing_key()).unwrap();

    let answer = app.get("/api/user", Some(&token)).await;

    assert_eq!(answer.status, 401, "{:?}", answer.body);
    assert_eq!(app.get("/api/user", Some(&foreign)).await.status, 401);
}

#[tokio::test]
async fn a_registered_user_can_sign_in_again_after_a_restart() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let alice = app.signed_up("alice").await;

    let app = app.restart().await;

    let login = app.login("alice@agora.test", "password123").await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    assert_eq!(
        app.refresh(&alice.refresh).await.status,
        200,
        "sessions survive too"
    );
    assert_eq!(
        app.get("/api/user", Some(&alice.token)).await.status,
        200,
        "the key survives"
    );
}
