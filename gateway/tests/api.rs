//! The gateway end to end against a fake upstream: REST JSON, error mapping,
//! SSE, gRPC-web, plain gRPC over h2c, the edge layers and the probes.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_proto::user::v1::{GetProfileRequest, GetProfileResponse};
use axum::body::Body;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{Request, StatusCode};
use prost::Message as _;
use serde_json::json;
use support::{TestApp, body_bytes, body_json};

#[tokio::test]
async fn a_profile_is_served_as_conduit_json_with_nulls_and_defaults() {
    let app = TestApp::start().await;

    let response = app.get("/api/profiles/jake").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        body_json(response).await,
        json!({"profile": {"username": "jake", "bio": null, "image": "https://i.example/jake.png", "following": false}})
    );
}

#[tokio::test]
async fn the_token_request_id_and_peer_address_are_forwarded_as_metadata() {
    let app = TestApp::start().await;
    let request = Request::get("/api/profiles/jake")
        .header("authorization", "Token abc.def.ghi")
        .header("x-request-id", "req-42")
        .header("x-real-ip", "6.6.6.6")
        .header("cookie", "secret=1")
        .body(Body::empty())
        .unwrap();

    let response = app.send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let seen = app.upstream.seen.lock().unwrap().pop().unwrap();
    assert_eq!(seen.get("authorization").unwrap(), "Token abc.def.ghi");
    assert_eq!(seen.get("x-request-id").unwrap(), "req-42");
    assert_eq!(seen.get("x-real-ip").unwrap(), "203.0.113.9");
    assert!(seen.get("cookie").is_none());
    assert!(
        seen.get("grpc-timeout").is_some(),
        "the deadline is propagated"
    );
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status() {
    let app = TestApp::start().await;

    app.get("/api/profiles/nobody").await;
    app.get("/no/such/route").await;
    let metrics = agora_gateway::metrics::exposition(&agora_gateway::metrics::install());

    assert_eq!(metrics.status(), StatusCode::OK);
    // Never on the public port.
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(body_bytes(metrics).await.to_vec()).unwrap();
    for series in [
        r#"agora_http_requests_total{method="GET",route="/api/profiles/{username}",status="404"}"#,
        r#"agora_http_requests_total{method="GET",route="unmatched",status="404"}"#,
        r#"agora_http_request_duration_seconds_bucket{method="GET",route="/api/profiles/{username}",le="+Inf"}"#,
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    assert!(!text.contains("nobody"), "raw paths are not labels");
}

#[tokio::test]
async fn fixed_routes_and_grpc_methods_are_labelled_by_name() {
    let app = TestApp::start().await;

    app.get("/healthz").await;
    let call = grpc_web_request(
        "/agora.user.v1.UserService/GetProfile",
        grpc_web_frame(&GetProfileRequest {
            username: "jake".into(),
        }),
    );
    body_bytes(app.send(call).await).await;
    let metrics = agora_gateway::metrics::exposition(&agora_gateway::metrics::install());
    let text = String::from_utf8(body_bytes(metrics).await.to_vec()).unwrap();

    for series in [
        r#"agora_http_requests_total{method="GET",route="/healthz",status="200"}"#,
        r#"agora_http_requests_total{method="POST",route="/agora.user.v1.UserService/GetProfile",status="200"}"#,
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_real_ip() {
    // Test requests come from support::PEER, 203.0.113.9.
    let app =
        TestApp::with_config(|c| c.trusted_proxies = vec!["203.0.113.0/24".parse().unwrap()]).await;
    let request = Request::get("/api/profiles/jake")
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.23")
        .body(Body::empty())
        .unwrap();

    app.send(request).await;

    let seen = app.upstream.seen.lock().unwrap().pop().unwrap();
    assert_eq!(seen.get("x-real-ip").unwrap(), "198.51.100.23");
}

#[tokio::test]
async fn an_unknown_profile_is_a_404_in_the_errors_shape() {
    let app = TestApp::start().await;

    let response = app.get("/api/profiles/nobody").await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body_json(response).await,
        json!({"errors": {"body": ["profile not found"]}})
    );
}

#[tokio::test]
async fn field_violations_from_the_service_become_a_conduit_422() {
    let app = TestApp::start().await;

    let response = app.get("/api/profiles/invalid!").await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body_json(response).await,
        json!({"errors": {"username": ["is invalid"]}})
    );
}

#[tokio::test]
async fn an_internal_upstream_error_is_a_generic_500() {
    let app = TestApp::start().await;

    let response = app.get("/api/profiles/boom").await;

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body_json(response).await,
        json!({"errors": {"body": ["internal error"]}})
    );
}

#[tokio::test]
async fn an_rpc_the_service_does_not_implement_is_a_501() {
    let app = TestApp::start().await;

    let response = app.get("/api/user").await;

    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504() {
    let app = TestApp::with_config(|c| c.request_timeout = Duration::from_millis(200)).await;

    let response = app.get("/api/profiles/slow").await;

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(body_json(response).await["errors"]["body"][0].is_string());
}

#[tokio::test]
async fn a_package_without_an_upstream_is_a_503() {
    let app =
        TestApp::with_config(|c| c.upstreams.retain(|package, _| package == "agora.user.v1")).await;

    let response = app.get("/api/tags").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn requests_the_gateway_cannot_route_or_read_get_json_4xx() {
    let app = TestApp::start().await;

    let cases = [
        (app.get("/nope").await, StatusCode::NOT_FOUND),
        (
            app.json("PATCH", "/api/profiles/jake", "{}").await,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            app.json("POST", "/healthz", "{}").await,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            app.json("PUT", "/api/user", "{\"user\": ").await,
            StatusCode::BAD_REQUEST,
        ),
        (
            app.json("PUT", "/api/user", "{\"user\": {\"email\": 5}}")
                .await,
            StatusCode::BAD_REQUEST,
        ),
        (
            app.get("/api/articles?limit=lots").await,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (response, expected) in cases {
        assert_eq!(response.status(), expected);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(body_json(response).await["errors"]["body"][0].is_string());
    }

    let form = Request::put("/api/user")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("user=x"))
        .unwrap();
    let response = app.send(form).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn an_oversize_body_is_refused_with_413_declared_or_not() {
    let app = TestApp::with_config(|c| c.body_limit_bytes = 64).await;
    let big = format!("{{\"user\": {{\"bio\": \"{}\"}}}}", "x".repeat(100));

    let declared = app.json("PUT", "/api/user", &big).await;
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body_json(declared).await["errors"]["body"][0].is_string());

    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(big))];
    let streamed = Request::put("/api/user")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    assert_eq!(
        app.send(streamed).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn server_streams_are_served_as_server_sent_events() {
    let app = TestApp::start().await;

    let response = app.get("/api/articles/live/comments/stream").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    let first_data = events[0]
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(first_data).unwrap();
    assert_eq!(first["added"]["id"], json!(7));
    assert_eq!(
        first["added"]["createdAt"],
        json!("2024-01-02T03:04:05.000Z")
    );
    assert!(events[0].lines().any(|l| l == "id: 7"), "{}", events[0]);
    assert!(events[1].contains("\"deletedId\":7"), "{}", events[1]);

    let missing = app.get("/api/articles/gone/comments/stream").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

fn grpc_web_frame(message: &impl prost::Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(payload.len() as u32);
    frame.put_slice(&payload);
    frame.freeze()
}

/// Splits a gRPC-web response body into (flag, payload) frames.
fn grpc_web_frames(mut body: Bytes) -> Vec<(u8, Bytes)> {
    let mut frames = Vec::new();
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        frames.push((flag, body.split_to(len)));
    }
    frames
}

fn grpc_web_request(path: &str, body: Bytes) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_grpc_web_call_is_translated_to_grpc_and_back() {
    let app = TestApp::start().await;
    let request = grpc_web_request(
        "/agora.user.v1.UserService/GetProfile",
        grpc_web_frame(&GetProfileRequest {
            username: "jake".into(),
        }),
    );

    let response = app.send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    let frames = grpc_web_frames(body_bytes(response).await);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].0, 0);
    let reply = GetProfileResponse::decode(frames[0].1.clone()).unwrap();
    assert_eq!(reply.profile.unwrap().username, "jake");
    assert_eq!(frames[1].0, 0x80);
    let trailers = String::from_utf8(frames[1].1.to_vec()).unwrap();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn a_grpc_web_text_call_is_base64_both_ways() {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let app = TestApp::start().await;
    let frame = grpc_web_frame(&GetProfileRequest {
        username: "jake".into(),
    });
    let request = Request::post("/agora.user.v1.UserService/GetProfile")
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .body(Body::from(engine.encode(&frame)))
        .unwrap();

    let response = app.send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
    let text = body_bytes(response).await;
    // Each chunk is encoded on its own, so decode quantum by quantum.
    let decoded: Vec<u8> = text
        .chunks(4)
        .flat_map(|quantum| engine.decode(quantum).unwrap())
        .collect();
    let frames = grpc_web_frames(Bytes::from(decoded));
    let reply = GetProfileResponse::decode(frames[0].1.clone()).unwrap();
    assert_eq!(reply.profile.unwrap().username, "jake");
    assert_eq!(frames.last().unwrap().0, 0x80);
}

#[tokio::test]
async fn a_grpc_web_error_keeps_its_status() {
    let app = TestApp::start().await;
    let request = grpc_web_request(
        "/agora.user.v1.UserService/GetProfile",
        grpc_web_frame(&GetProfileRequest {
            username: "nobody".into(),
        }),
    );

    let response = app.send(request).await;

    let status = response.headers().get("grpc-status").cloned();
    let body = body_bytes(response).await;
    let in_trailers = grpc_web_frames(body)
        .iter()
        .any(|(flag, t)| *flag == 0x80 && String::from_utf8_lossy(t).contains("grpc-status:5"));
    assert!(status.is_some_and(|s| s == "5") || in_trailers);
}

#[tokio::test]
async fn internal_services_are_unreachable_over_grpc_web() {
    let app = TestApp::start().await;
    let request = grpc_web_request(
        "/agora.user.v1.UserInternalService/VerifyCredentials",
        grpc_web_frame(&GetProfileRequest::default()),
    );

    let response = app.send(request).await;

    assert_eq!(response.headers()["grpc-status"], "12");
    assert!(app.upstream.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn every_response_carries_security_headers_and_a_request_id() {
    let app = TestApp::start().await;

    for response in [app.get("/healthz").await, app.get("/nope").await] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        assert!(headers.contains_key("strict-transport-security"));
        assert_eq!(headers["x-permitted-cross-domain-policies"], "none");
        assert!(!headers["x-request-id"].is_empty());
        assert!(!headers.contains_key("x-powered-by"));
        assert!(
            headers["permissions-policy"]
                .to_str()
                .unwrap()
                .contains("camera=()")
        );
    }
}

#[tokio::test]
async fn answers_that_carry_tokens_or_a_callers_data_are_never_cached() {
    let app = TestApp::start().await;

    let login = app.json("POST", "/api/users/login/", "{}").await;
    let signed_in = app
        .send(
            Request::get("/api/profiles/jake")
                .header("authorization", "Token abc")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let anonymous = app.get("/api/profiles/jake").await;

    assert_eq!(login.headers()["cache-control"], "no-store");
    assert_eq!(signed_in.headers()["cache-control"], "no-store");
    assert!(!anonymous.headers().contains_key("cache-control"));
}

#[tokio::test]
async fn cors_allows_listed_origins_only_and_exposes_grpc_headers() {
    let app = TestApp::with_config(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let preflight = |origin: &str| {
        Request::options("/api/articles")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };

    let allowed = app.send(preflight("https://app.example")).await;
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    let refused = app.send(preflight("https://evil.example")).await;
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let request = Request::get("/api/profiles/jake")
        .header("origin", "https://app.example")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
}

#[tokio::test]
async fn auth_routes_hit_their_stricter_rate_limit_first() {
    let app = TestApp::with_config(|c| c.auth_rate_limit_per_minute = 2).await;

    // Every spelling the gateway serves as a sign-in call spends the same budget.
    for path in ["/api/users/login", "/api/users/login/"] {
        let response = app.json("POST", path, "{}").await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let over_grpc_web = app
        .send(
            Request::post("//agora.auth.v1.AuthService/Login")
                .header("content-type", "application/grpc-web+proto")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(over_grpc_web.headers()["grpc-status"], "8");
    let limited = app.json("POST", "/api/users/login", "{}").await;

    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert!(body_json(limited).await["errors"]["body"][0].is_string());
    assert_eq!(app.get("/api/profiles/jake").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_probes_report_liveness_and_upstream_readiness() {
    let app = TestApp::start().await;
    let healthz = app.get("/healthz").await;
    assert_eq!(healthz.status(), StatusCode::OK);
    assert_eq!(body_json(healthz).await, json!({"status": "ok"}));
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);

    let partial =
        TestApp::with_config(|c| c.upstreams.retain(|package, _| package == "agora.user.v1")).await;
    let readyz = partial.get("/readyz").await;
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(readyz).await;
    assert!(
        body["failing"]
            .as_array()
            .unwrap()
            .contains(&json!("agora.post.v1")),
        "{body}"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let app = TestApp::start().await;

    let response = app.get("/openapi.json").await;

    assert_eq!(response.status(), StatusCode::OK);
    let doc = body_json(response).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, agora_gateway::openapi_document());
}

#[tokio::test]
async fn serve_speaks_http1_and_plain_grpc_on_one_port() {
    let upstream = support::Upstream::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let config = agora_gateway::GatewayConfig {
        upstreams: support::all_packages(upstream.channel()),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agora_gateway::serve(listener, config, async {
        let _ = stopped.await;
    }));

    // HTTP/1.1 REST.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    let response = client
        .get(format!("http://{addr}/api/profiles/jake").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_11);

    // Plain gRPC over cleartext HTTP/2, forwarded to the owning service.
    let mut grpc = UserServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let reply = grpc
        .get_profile(GetProfileRequest {
            username: "jake".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().profile.unwrap().username, "jake");
    let error = grpc
        .get_profile(GetProfileRequest {
            username: "invalid!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    let seen = upstream.seen.lock().unwrap().pop().unwrap();
    assert_eq!(seen.get("x-real-ip").unwrap(), "127.0.0.1");

    drop(grpc);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("shutdown drains")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = agora_gateway::GatewayConfig {
        header_read_timeout: Duration::from_millis(200),
        ..agora_gateway::GatewayConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agora_gateway::serve(listener, config, async {
        let _ = stopped.await;
    }));

    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: agora\r\nx-slow: ")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;

    assert!(
        closed.is_ok(),
        "the connection stays open for a client that never finishes its headers"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
