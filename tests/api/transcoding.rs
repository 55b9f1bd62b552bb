//! The gateway's edge: bad input answered with clear 4xx JSON, headers every
//! answer carries, and the operational endpoints.

use crate::helpers::{Backend, TestApp};

async fn app() -> TestApp {
    TestApp::spawn(Backend::Sqlite).await
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_error() {
    let app = app().await;

    let answer = app
        .send("POST", "/api/users", None, &[], "{\"user\": {")
        .await;

    assert_eq!(answer.status, 400, "{:?}", answer.raw);
    assert!(
        answer.body["errors"]["body"][0].is_string(),
        "{:?}",
        answer.body
    );
}

#[tokio::test]
async fn wrong_json_types_are_400_not_500() {
    let app = app().await;

    for body in [
        r#"{"user": {"email": 42, "password": "x", "username": "y"}}"#,
        r#"{"user": []}"#,
        r#"[1, 2, 3]"#,
        r#""just a string""#,
    ] {
        let answer = app.send("POST", "/api/users", None, &[], body).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.raw);
        assert!(
            answer.body["errors"].is_object(),
            "{body}: {:?}",
            answer.raw
        );
    }
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let app = app().await;

    let answer = app.get("/api/nothing/here", None).await;

    assert_eq!(answer.status, 404);
    assert!(answer.body["errors"].is_object(), "{:?}", answer.raw);
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let app = app().await;
    let huge = format!(r#"{{"user": {{"email": "{}"}}}}"#, "a".repeat(2 << 20));

    let answer = app.send("POST", "/api/users/login", None, &[], huge).await;

    assert_eq!(answer.status, 413, "{:?}", answer.body);
}

#[tokio::test]
async fn every_answer_carries_security_headers_and_a_request_id() {
    let app = app().await;

    let answer = app.get("/api/profiles/nobody", None).await;

    assert_eq!(answer.headers["x-content-type-options"], "nosniff");
    assert_eq!(answer.headers["x-frame-options"], "DENY");
    assert!(answer.headers.contains_key("content-security-policy"));
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn cors_allows_listed_origins_only() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("AGORA_CORS_ORIGINS", "https://app.example")],
    )
    .await;
    let preflight = |origin: &'static str| {
        let app = &app;
        async move {
            app.send(
                "OPTIONS",
                "/api/user",
                None,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "PUT"),
                    (
                        "access-control-request-headers",
                        "authorization,content-type",
                    ),
                ],
                "",
            )
            .await
        }
    };

    let allowed = preflight("https://app.example").await;
    let denied = preflight("https://evil.example").await;

    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(!denied.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn health_readiness_and_openapi_are_served() {
    let app = app().await;

    assert_eq!(app.get("/healthz", None).await.status, 200);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    let openapi = app.get("/openapi.json", None).await;
    assert_eq!(openapi.status, 200);
    assert!(openapi.body["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(openapi.body["paths"]["/api/users/login"]["post"].is_object());
    assert!(openapi.body["paths"]["/api/profiles/{username}"]["get"].is_object());
}

#[tokio::test]
async fn a_body_sent_to_a_route_without_one_leaves_the_connection_usable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app().await;
    let mut socket = tokio::net::TcpStream::connect(app.http).await.unwrap();

    // Headers first, the body a moment later: as clients that write them apart do.
    socket
        .write_all(
            b"POST /api/profiles/nobody/follow HTTP/1.1\r\nhost: agora\r\n\
              content-type: application/json\r\ncontent-length: 2\r\n\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    socket.write_all(b"{}").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: agora\r\n\r\n")
        .await
        .unwrap();

    let mut seen = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("HTTP/1.1 200") {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;

    let text = String::from_utf8_lossy(&seen);
    assert!(read.is_ok(), "timed out: {text}");
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.contains("HTTP/1.1 200"),
        "the second request was answered: {text}"
    );
}
