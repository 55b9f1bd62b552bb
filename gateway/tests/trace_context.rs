//! One trace from the HTTP request to the upstream: the gateway continues the
//! client's `traceparent` (or starts a trace) and hands its own span to the
//! service as the parent, over REST and over the gRPC-web proxy alike.
//!
//! Its own test binary, because spans carry trace context only under a
//! process-wide subscriber with the OpenTelemetry layer.

mod support;

use agora_proto::user::v1::GetProfileRequest;
use axum::body::Body;
use bytes::{BufMut as _, Bytes, BytesMut};
use http::{Request, StatusCode};
use support::{TestApp, body_bytes};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// The trace id and parent span id of the `traceparent` the upstream saw last.
fn upstream_trace(app: &TestApp) -> (String, String) {
    let seen = app.upstream.seen.lock().unwrap().pop().unwrap();
    let traceparent = seen.get("traceparent").unwrap().to_str().unwrap();
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (fields[1].to_owned(), fields[2].to_owned())
}

fn grpc_web_frame(message: &impl prost::Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(payload.len() as u32);
    frame.put_slice(&payload);
    frame.freeze()
}

#[tokio::test]
async fn a_rest_call_continues_the_client_trace_upstream() {
    support::trace_everything();
    let app = TestApp::start().await;
    let request = Request::get("/api/profiles/jake")
        .header("traceparent", client_traceparent())
        .body(Body::empty())
        .unwrap();

    let response = app.send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
    let (trace, parent) = upstream_trace(&app);
    assert_eq!(trace, CLIENT_TRACE);
    assert_ne!(parent, CLIENT_SPAN, "the parent is the gateway's own span");
}

#[tokio::test]
async fn a_grpc_web_call_continues_the_client_trace_upstream() {
    support::trace_everything();
    let app = TestApp::start().await;
    let request = Request::post("/agora.user.v1.UserService/GetProfile")
        .header("content-type", "application/grpc-web+proto")
        .header("traceparent", client_traceparent())
        .body(Body::from(grpc_web_frame(&GetProfileRequest {
            username: "jake".into(),
        })))
        .unwrap();

    let response = app.send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
    body_bytes(response).await;
    let (trace, parent) = upstream_trace(&app);
    assert_eq!(trace, CLIENT_TRACE);
    assert_ne!(parent, CLIENT_SPAN, "the parent is the gateway's own span");
}

#[tokio::test]
async fn without_a_client_trace_the_gateway_starts_one() {
    support::trace_everything();
    let app = TestApp::start().await;

    app.get("/api/profiles/jake").await;

    let (trace, _) = upstream_trace(&app);
    assert_ne!(trace, "0".repeat(32));
}
