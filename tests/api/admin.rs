//! Administration: only admins list, re-role and delete accounts.

use serde_json::json;

use crate::helpers::TestApp;

crate::on_both_backends!(
    admin_routes_are_forbidden_to_users_and_closed_to_anonymous,
    the_bootstrap_admin_pages_through_accounts,
    an_admin_changes_a_role_and_it_reaches_every_token,
    an_admin_deletes_an_account_and_its_sessions_die,
    the_bootstrap_address_makes_an_admin_only_while_there_is_none,
);

async fn admin_routes_are_forbidden_to_users_and_closed_to_anonymous(app: TestApp) {
    let user = app.signed_up("user").await;
    app.signed_up("victim").await;

    let anonymous = app.get("/api/admin/users", None).await;
    let listed = app.get("/api/admin/users", Some(&user.token)).await;
    let role = app
        .put(
            "/api/admin/users/victim/role",
            Some(&user.token),
            json!({"role": "ROLE_ADMIN"}),
        )
        .await;
    let deleted = app
        .delete("/api/admin/users/victim", Some(&user.token))
        .await;

    assert_eq!(anonymous.status, 401);
    assert_eq!(listed.status, 403);
    assert_eq!(role.status, 403);
    assert_eq!(deleted.status, 403);
}

async fn the_bootstrap_admin_pages_through_accounts(app: TestApp) {
    let root = app.signed_up("root").await;
    for name in ["u1", "u2", "u3"] {
        app.signed_up(name).await;
    }

    let first = app.get("/api/admin/users?limit=3", Some(&root.token)).await;
    let cursor = first.body["nextCursor"].as_str().unwrap().to_owned();
    let second = app
        .get(
            &format!("/api/admin/users?limit=3&cursor={cursor}"),
            Some(&root.token),
        )
        .await;

    assert_eq!(first.status, 200, "{:?}", first.body);
    let names = |a: &crate::helpers::Answer| -> Vec<String> {
        a.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&first), ["root", "u1", "u2"]);
    assert_eq!(first.body["users"][0]["role"], "ROLE_ADMIN");
    assert_eq!(names(&second), ["u3"]);
    assert_eq!(second.body["nextCursor"], "");
    let too_many = app
        .get("/api/admin/users?limit=1000", Some(&root.token))
        .await;
    assert_eq!(too_many.status, 422);
}

async fn an_admin_changes_a_role_and_it_reaches_every_token(app: TestApp) {
    let root = app.signed_up("root").await;
    let bob = app.signed_up("bob").await;

    let changed = app
        .put(
            "/api/admin/users/bob/role",
            Some(&root.token),
            json!({"role": "ROLE_ADMIN"}),
        )
        .await;
    let refreshed = app.refresh(&bob.refresh).await;
    let token = refreshed.body["token"].as_str().unwrap();

    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(changed.body["user"]["role"], "ROLE_ADMIN");
    assert_eq!(app.get("/api/admin/users", Some(token)).await.status, 200);
    // The token from before the change carries the new role too (ADR 11).
    app.get_until("/api/admin/users", Some(&bob.token), |a| a.status == 200)
        .await;
    let unspecified = app
        .put(
            "/api/admin/users/bob/role",
            Some(&root.token),
            json!({"role": "ROLE_UNSPECIFIED"}),
        )
        .await;
    assert_eq!(unspecified.status, 422);
}

async fn an_admin_deletes_an_account_and_its_sessions_die(app: TestApp) {
    let root = app.signed_up("root").await;
    let bob = app.signed_up("bob").await;

    let deleted = app.delete("/api/admin/users/bob", Some(&root.token)).await;

    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    assert_eq!(app.get("/api/profiles/bob", None).await.status, 404);
    assert_eq!(app.get("/api/user", Some(&bob.token)).await.status, 401);
    assert_eq!(app.refresh(&bob.refresh).await.status, 401);
    assert_eq!(app.login("bob@agora.test", "password123").await.status, 401);
    assert_eq!(
        app.delete("/api/admin/users/root", Some(&root.token))
            .await
            .status,
        422
    );
}

async fn the_bootstrap_address_makes_an_admin_only_while_there_is_none(app: TestApp) {
    let root = app.register("root", "root@agora.test", "password123").await;
    assert_eq!(root.status, 201, "{:?}", root.body);
    let bob = app.signed_up("bob").await;
    let bob_admin = app.with_role(&bob, "bob", "ROLE_ADMIN").await;
    let gone = app.delete("/api/admin/users/root", Some(&bob_admin)).await;
    assert_eq!(gone.status, 204, "{:?}", gone.body);

    let again = app
        .register("root2", "root@agora.test", "password123")
        .await;

    assert_eq!(again.status, 201, "{:?}", again.body);
    let token = again.body["user"]["token"].as_str().unwrap();
    assert_eq!(app.get("/api/admin/users", Some(token)).await.status, 403);
    let listed = app.get("/api/admin/users", Some(&bob_admin)).await;
    let root2 = listed.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "root2")
        .unwrap()
        .clone();
    assert_eq!(root2["role"], "ROLE_USER");
}
