//! Live comment rooms: a watcher sees comments added and deleted, over
//! Server-Sent Events and over gRPC-web, as they happen.

use std::time::Duration;

use agora_proto::post::v1::watch_comments_response::Change;
use agora_proto::post::v1::{WatchCommentsRequest, WatchCommentsResponse};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost::Message;
use serde_json::json;

use crate::helpers::TestApp;

crate::on_every_bus!(
    comments_arrive_live_over_server_sent_events,
    comments_arrive_live_over_grpc_web,
    a_draft_cannot_be_watched_by_others,
);

/// Reads body frames until `done` says the collected bytes are enough.
async fn read_until(body: &mut Incoming, buffer: &mut BytesMut, done: impl Fn(&[u8]) -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done(buffer) {
            let frame = body
                .frame()
                .await
                .expect("stream still open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                buffer.put(data);
            }
        }
    })
    .await
    .expect("the change arrives within five seconds");
}

async fn comments_arrive_live_over_server_sent_events(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let slug = app.article(&jake.token, "Live", &[]).await;

    let response = app
        .open(
            "GET",
            &format!("/api/articles/{slug}/comments/stream"),
            None,
            &[("accept", "text/event-stream")],
            Bytes::new(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.into_body();
    let added = app
        .post(
            &format!("/api/articles/{slug}/comments"),
            Some(&jake.token),
            json!({"comment": {"body": "first!"}}),
        )
        .await;
    let id = added.body["comment"]["id"].as_i64().unwrap();
    app.delete(
        &format!("/api/articles/{slug}/comments/{id}"),
        Some(&jake.token),
    )
    .await;

    let mut seen = BytesMut::new();
    read_until(&mut body, &mut seen, |b| {
        String::from_utf8_lossy(b).contains("deletedId")
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    assert_eq!(events[0]["added"]["body"], "first!");
    assert_eq!(events[0]["added"]["author"]["username"], "jake");
    assert_eq!(events[1]["deletedId"], id);
}

async fn comments_arrive_live_over_grpc_web(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let slug = app.article(&jake.token, "Live", &[]).await;
    let request = WatchCommentsRequest { slug: slug.clone() }.encode_to_vec();
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(request.len() as u32);
    frame.put_slice(&request);

    let response = app
        .open(
            "POST",
            "/agora.post.v1.PostService/WatchComments",
            None,
            &[
                ("content-type", "application/grpc-web+proto"),
                ("x-grpc-web", "1"),
            ],
            frame.freeze(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    app.post(
        &format!("/api/articles/{slug}/comments"),
        Some(&jake.token),
        json!({"comment": {"body": "over grpc-web"}}),
    )
    .await;

    let mut seen = BytesMut::new();
    read_until(&mut body, &mut seen, |b| {
        b.len() >= 5 && b.len() >= 5 + u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize
    })
    .await;
    let mut data = seen.freeze();
    assert_eq!(data.get_u8(), 0, "a data frame");
    let len = data.get_u32() as usize;
    let change = WatchCommentsResponse::decode(&data[..len]).unwrap();
    match change.change {
        Some(Change::Added(comment)) => assert_eq!(comment.body, "over grpc-web"),
        other => panic!("expected an added comment, got {other:?}"),
    }
}

async fn a_draft_cannot_be_watched_by_others(app: TestApp) {
    let jake = app.signed_up("jake").await;
    let anna = app.signed_up("anna").await;
    let draft = app
        .post(
            "/api/articles",
            Some(&jake.token),
            json!({"article": {"title": "Hidden", "description": "d", "body": "b", "published": false}}),
        )
        .await;
    let slug = draft.body["article"]["slug"].as_str().unwrap();

    let path = format!("/api/articles/{slug}/comments/stream");
    let other = app
        .open("GET", &path, Some(&anna.token), &[], Bytes::new())
        .await;
    let author = app
        .open("GET", &path, Some(&jake.token), &[], Bytes::new())
        .await;

    assert_eq!(other.status(), 404);
    assert_eq!(author.status(), 200);
}
