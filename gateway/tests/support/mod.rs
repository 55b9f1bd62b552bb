//! A fake upstream (one agora service, implemented just enough) on 127.0.0.1:0,
//! and a `TestApp` that points a gateway at it and drives it with `oneshot`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use agora_gateway::GatewayConfig;
use agora_kit::upstream::Upstream as Channel;
use agora_proto::post::v1::post_service_server::{PostService, PostServiceServer};
use agora_proto::post::v1::{
    Author, Comment, WatchCommentsRequest, WatchCommentsResponse, watch_comments_response,
};
use agora_proto::user::v1::user_service_server::{UserService, UserServiceServer};
use agora_proto::user::v1::{GetProfileRequest, GetProfileResponse, Profile};
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::metadata::MetadataMap;
use tonic::transport::Endpoint;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use tower::ServiceExt as _;

/// The peer address test requests claim to come from.
pub const PEER: ([u8; 4], u16) = ([203, 0, 113, 9], 4321);

/// Metadata the fake saw, newest last.
pub type Seen = Arc<Mutex<Vec<MetadataMap>>>;

/// Implements GetProfile only; the rest answer UNIMPLEMENTED through the default stubs.
#[derive(Clone, Default)]
pub struct FakeUsers {
    pub seen: Seen,
}

#[tonic::async_trait]
impl UserService for FakeUsers {
    async fn get_profile(
        &self,
        request: tonic::Request<GetProfileRequest>,
    ) -> Result<tonic::Response<GetProfileResponse>, Status> {
        self.seen.lock().unwrap().push(request.metadata().clone());
        match request.get_ref().username.as_str() {
            "jake" => Ok(tonic::Response::new(GetProfileResponse {
                profile: Some(Profile {
                    username: "jake".into(),
                    bio: None,
                    image: Some("https://i.example/jake.png".into()),
                    following: false,
                }),
            })),
            "invalid!" => Err(Status::with_error_details(
                Code::InvalidArgument,
                "invalid username",
                ErrorDetails::with_bad_request_violation("username", "is invalid"),
            )),
            "boom" => Err(Status::internal("db: connection refused at 10.0.0.3:5432")),
            "slow" => {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                Err(Status::not_found("too late"))
            }
            _ => Err(Status::not_found("profile not found")),
        }
    }
}

/// Implements WatchComments only: two events, then the end of the stream.
#[derive(Clone, Default)]
pub struct FakePosts;

#[tonic::async_trait]
impl PostService for FakePosts {
    async fn watch_comments(
        &self,
        request: tonic::Request<WatchCommentsRequest>,
    ) -> Result<tonic::Response<tonic::codegen::BoxStream<WatchCommentsResponse>>, Status> {
        if request.get_ref().slug != "live" {
            return Err(Status::not_found("article not found"));
        }
        let added = WatchCommentsResponse {
            change: Some(watch_comments_response::Change::Added(Comment {
                id: 7,
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_704_164_645,
                    nanos: 0,
                }),
                updated_at: None,
                body: "first".into(),
                author: Some(Author {
                    username: "jake".into(),
                    bio: None,
                    image: None,
                    following: false,
                }),
            })),
        };
        let deleted = WatchCommentsResponse {
            change: Some(watch_comments_response::Change::DeletedId(7)),
        };
        let stream = tokio_stream::iter([Ok(added), Ok(deleted)]);
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

/// A running fake upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Seen,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Upstream {
    /// Serves the fake user and post services plus grpc.health.v1 on a free port.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let users = FakeUsers::default();
        let seen = users.seen.clone();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(UserServiceServer::new(users))
                .add_service(PostServiceServer::new(FakePosts))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Upstream {
            addr,
            seen,
            stop: Some(stop),
        }
    }

    pub fn channel(&self) -> Channel {
        agora_kit::upstream::remote(
            Endpoint::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect_lazy(),
        )
    }
}

/// A gateway in front of the fake upstream, driven in process.
pub struct TestApp {
    pub upstream: Upstream,
    pub router: axum::Router,
}

impl TestApp {
    /// Every agora package routed to the fake (which serves users and posts).
    pub async fn start() -> TestApp {
        Self::with_config(|_| {}).await
    }

    /// Like `start`, with the config adjusted first.
    pub async fn with_config(adjust: impl FnOnce(&mut GatewayConfig)) -> TestApp {
        let upstream = Upstream::start().await;
        let mut config = GatewayConfig {
            upstreams: all_packages(upstream.channel()),
            ..GatewayConfig::default()
        };
        adjust(&mut config);
        let router = agora_gateway::router(config).unwrap();
        TestApp { upstream, router }
    }

    pub async fn send(&self, mut request: Request<Body>) -> Response<Body> {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(PEER)));
        self.router.clone().oneshot(request).await.unwrap()
    }

    pub async fn get(&self, uri: &str) -> Response<Body> {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    pub async fn json(&self, method: &str, uri: &str, body: &str) -> Response<Body> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.send(request).await
    }
}

pub fn all_packages(channel: Channel) -> HashMap<String, Channel> {
    [
        "agora.user.v1",
        "agora.auth.v1",
        "agora.post.v1",
        "agora.notification.v1",
    ]
    .into_iter()
    .map(|package| (package.to_owned(), channel.clone()))
    .collect()
}

/// Makes every span in this test binary carry OpenTelemetry context (no exporter),
/// as in a process with `OTEL_EXPORTER_OTLP_ENDPOINT` set. Process-wide: a
/// per-thread subscriber races with tests on other threads over tracing's cached
/// callsite interest.
pub fn trace_everything() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        agora_kit::trace_context::install_propagator();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("gateway-test")));
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
    });
}

pub async fn body_bytes(response: Response<Body>) -> bytes::Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

pub async fn body_json(response: Response<Body>) -> serde_json::Value {
    let bytes = body_bytes(response).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}
