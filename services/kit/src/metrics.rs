//! Prometheus metrics: one recorder per process ([`install`]), rendered by whoever
//! serves `/metrics` (the gateway), and RED metrics per RPC for the gRPC server
//! ([`GrpcMetricsLayer`]): how many calls, how they ended, how long they took.
//!
//! Labels come from a closed set. A path that names no method of the contract is
//! counted as `unknown`, so a client inventing paths cannot create series.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use metrics_exporter_prometheus::PrometheusBuilder;
use prost::Message as _;
use tonic::Code;

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Counter of finished RPCs by `service`, `method` and `code`.
pub const GRPC_REQUESTS: &str = "agora_grpc_requests_total";
/// Histogram of RPC durations by `service` and `method`, until the status is sent
/// (for server streams: the life of the stream).
pub const GRPC_DURATION: &str = "agora_grpc_request_duration_seconds";

/// Latency buckets in seconds, for every histogram: from a cached read (~1 ms) to
/// the request timeout (30 s by default).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes;
/// until then they are held in memory.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder on first call and returns a handle
/// to render it. Later calls return the same handle, so every app a test starts
/// in one process can call it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            metrics::describe_counter!(GRPC_REQUESTS, "gRPC calls served, by final status");
            metrics::describe_histogram!(
                GRPC_DURATION,
                metrics::Unit::Seconds,
                "gRPC call duration until the status is sent"
            );
            // A thread, not a task: it must outlive whichever runtime called first
            // (tests start one runtime per test).
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "metrics upkeep thread not started; scrapes still drain");
            }
            handle
        })
        .clone()
}

/// The labels of one known method.
#[derive(Debug, Clone)]
struct MethodLabels {
    service: Arc<str>,
    method: Arc<str>,
}

/// Every method the process may serve, by `/package.Service/Method` path.
#[derive(Debug)]
struct KnownMethods(HashMap<String, MethodLabels>);

impl KnownMethods {
    /// agora's contract plus health and reflection, decoded once per process.
    fn served() -> Arc<Self> {
        static KNOWN: OnceLock<Arc<KnownMethods>> = OnceLock::new();
        KNOWN
            .get_or_init(|| {
                Arc::new(Self::from_sets(&[
                    agora_proto::FILE_DESCRIPTOR_SET,
                    tonic_health::pb::FILE_DESCRIPTOR_SET,
                    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ]))
            })
            .clone()
    }

    fn from_sets(sets: &[&[u8]]) -> Self {
        let mut known = HashMap::new();
        for set in sets {
            // The sets are embedded at build time; one that does not decode only
            // means its methods are counted as `unknown`.
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    let service_label: Arc<str> = name.as_str().into();
                    for method in &service.method {
                        known.insert(
                            format!("/{name}/{}", method.name()),
                            MethodLabels {
                                service: service_label.clone(),
                                method: method.name().into(),
                            },
                        );
                    }
                }
            }
        }
        Self(known)
    }

    fn labels(&self, path: &str) -> MethodLabels {
        self.0.get(path).cloned().unwrap_or_else(|| MethodLabels {
            service: "unknown".into(),
            method: "unknown".into(),
        })
    }
}

/// Records [`GRPC_REQUESTS`] and [`GRPC_DURATION`] for every call a gRPC server
/// answers. The status is read from the response headers (trailers-only answers,
/// which is how handler errors go out) or else from the trailers at the end of the
/// body, so errors in the middle of a stream count too.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    known: Arc<KnownMethods>,
}

impl Default for GrpcMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcMetricsLayer {
    /// Labels from agora's contract, health and reflection.
    pub fn new() -> Self {
        Self {
            known: KnownMethods::served(),
        }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            known: self.known.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a gRPC server's routes.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    known: Arc<KnownMethods>,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call {
            labels: self.known.labels(request.uri().path()),
            started: Instant::now(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    call.finish(Code::Unknown);
                    return Err(error);
                }
            };
            if let Some(code) = response.headers().get("grpc-status") {
                call.finish(Code::from_bytes(code.as_bytes()));
                return Ok(response);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(RecordAtEnd {
                    inner: body,
                    call: Some(call),
                })
            }))
        })
    }
}

/// One call being measured.
#[derive(Debug)]
struct Call {
    labels: MethodLabels,
    started: Instant,
}

impl Call {
    fn finish(self, code: Code) {
        let MethodLabels { service, method } = self.labels;
        metrics::histogram!(GRPC_DURATION, "service" => service.clone(), "method" => method.clone())
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!(
            GRPC_REQUESTS,
            "service" => service,
            "method" => method,
            "code" => code_name(code),
        )
        .increment(1);
    }
}

/// A response body that records its call when the trailers (and so the status)
/// go out, or when it is dropped before that: the client went away.
struct RecordAtEnd {
    inner: tonic::body::Body,
    call: Option<Call>,
}

impl http_body::Body for RecordAtEnd {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                trailers
                    .get("grpc-status")
                    .map_or(Code::Unknown, |code| Code::from_bytes(code.as_bytes()))
            }),
            Poll::Ready(Some(Err(status))) => Some(status.code()),
            // A body that ends without a status is a broken answer.
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordAtEnd {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(Code::Cancelled);
        }
    }
}

/// The status names of the gRPC spec (`OK`, `NOT_FOUND`, ...), as dashboards and
/// other gRPC servers label them.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt as _;
    use tower::{Layer as _, ServiceExt as _};

    use super::*;

    /// A route that answers with the given headers and, if any, trailers.
    fn answering(
        status_in_headers: Option<&'static str>,
        status_in_trailers: Option<&'static str>,
    ) -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        tower::service_fn(move |_request: http::Request<()>| async move {
            let body = match status_in_trailers {
                Some(code) => {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", code.parse().unwrap());
                    let frames = [
                        Ok::<_, tonic::Status>(Frame::data(bytes::Bytes::from_static(b"msg"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(
                        frames,
                    )))
                }
                None => tonic::body::Body::empty(),
            };
            let mut response = http::Response::new(body);
            if let Some(code) = status_in_headers {
                response
                    .headers_mut()
                    .insert("grpc-status", code.parse().unwrap());
            }
            Ok::<_, Infallible>(response)
        })
    }

    fn call(path: &str) -> http::Request<()> {
        http::Request::post(path).body(()).unwrap()
    }

    #[test]
    fn install_is_idempotent() {
        let first = install();
        let second = install();
        metrics::counter!("agora_test_idempotent_total").increment(1);
        for handle in [first, second] {
            assert!(handle.render().contains("agora_test_idempotent_total 1"));
        }
    }

    #[tokio::test]
    async fn a_trailers_only_error_is_counted_with_its_code() {
        let handle = install();
        let service = GrpcMetricsLayer::new().layer(answering(Some("5"), None));

        service
            .oneshot(call("/agora.user.v1.UserService/GetProfile"))
            .await
            .unwrap();

        let text = handle.render();
        assert!(
            text.contains(
                r#"agora_grpc_requests_total{service="agora.user.v1.UserService",method="GetProfile",code="NOT_FOUND"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"agora_grpc_request_duration_seconds_bucket{service="agora.user.v1.UserService",method="GetProfile",le="+Inf"}"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_status_in_the_trailers_is_counted_when_the_body_ends() {
        let handle = install();
        let service = GrpcMetricsLayer::new().layer(answering(None, Some("0")));

        let response = service
            .oneshot(call("/grpc.health.v1.Health/Check"))
            .await
            .unwrap();
        let series = r#"agora_grpc_requests_total{service="grpc.health.v1.Health",method="Check",code="OK"} 1"#;
        assert!(!handle.render().contains(series), "counted before the end");
        response.into_body().collect().await.unwrap();

        assert!(handle.render().contains(series), "{}", handle.render());
    }

    #[tokio::test]
    async fn unknown_paths_share_one_series() {
        let handle = install();
        let service = GrpcMetricsLayer::new().layer(answering(Some("12"), None));

        for path in ["/made.Up/One", "/made.Up/Two", "/nonsense"] {
            service.clone().oneshot(call(path)).await.unwrap();
        }

        let text = handle.render();
        assert!(
            text.contains(
                r#"agora_grpc_requests_total{service="unknown",method="unknown",code="UNIMPLEMENTED"} 3"#
            ),
            "{text}"
        );
        assert!(!text.contains("made.Up"), "{text}");
    }
}
