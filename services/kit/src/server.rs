//! The gRPC server every target runs: the services it is given plus
//! `grpc.health.v1` and reflection (both `v1` and `v1alpha`, since many clients
//! — Python's grpcio among them — still speak only `v1alpha`).
//!
//! Every call gets a span (named after its method, continuing the caller's trace
//! from `traceparent`) and RED metrics (`metrics::GrpcMetricsLayer`).
//!
//! Shutdown is ordered: health flips to NOT_SERVING first so load balancers stop
//! sending, then the listener closes and in-flight calls drain.
//!
//! The same stack also answers calls from inside the process
//! ([`GrpcServer::in_process`]): span, metrics, deadline and routes as over the
//! socket, minus HTTP/2 and the socket itself.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;
use tracing::Instrument as _;

use crate::db::Db;
use crate::events::Bus;
use crate::metrics::GrpcMetricsLayer;
use crate::trace_context;
use crate::upstream::Upstream;

/// Collects services, then serves them on one listener.
pub struct GrpcServer {
    routes: RoutesBuilder,
    /// Each service and the database its readiness follows.
    names: Vec<(&'static str, Db)>,
    /// The event bus the services also depend on, if any.
    bus: Option<Arc<dyn Bus>>,
    health: HealthReporter,
}

/// How often a service's database is probed for readiness.
/// The largest gRPC message any agora server or client sends or accepts. Set
/// explicitly on every generated server and client (`message_limits!`), so the
/// bound is a decision here rather than each library's default.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Applies [`MAX_MESSAGE_BYTES`] both ways to a generated tonic server or client.
#[macro_export]
macro_rules! message_limits {
    ($grpc:expr) => {
        $grpc
            .max_decoding_message_size($crate::server::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::server::MAX_MESSAGE_BYTES)
    };
}

const DB_PROBE_INTERVAL: Duration = Duration::from_secs(5);

impl Default for GrpcServer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServer {
    pub fn new() -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(agora_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the embedded descriptor set is valid");
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(agora_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("the embedded descriptor set is valid");
        routes.add_service(reflection_v1);
        routes.add_service(reflection_v1alpha);
        Self {
            routes,
            names: Vec::new(),
            bus: None,
            health,
        }
    }

    /// Adds a generated tonic service, SERVING only while `db` (and the bus, if
    /// any) answers, so load balancers and the gateway's `/readyz` stop sending
    /// work it cannot do.
    pub fn register<S>(mut self, service: S, db: Db) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push((S::NAME, db));
        self.routes.add_service(service);
        self
    }

    /// The health reporter, for services whose readiness depends on more than
    /// the process being up (a database, the bus).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Makes every service NOT_SERVING while `bus` is disconnected too: their
    /// writes would pile up unpublished.
    pub fn with_bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// These services as an upstream for callers in this process: each call gets
    /// the span, metrics and `grpc-timeout` deadline a call over the socket gets,
    /// then goes to the same routes with its protobuf body as encoded.
    pub fn in_process(&self) -> Upstream {
        let stack = tower::ServiceBuilder::new()
            .layer(GrpcMetricsLayer::new())
            .service(self.routes.clone().routes().prepare());
        BoxCloneSyncService::new(tower::service_fn(
            move |request: http::Request<tonic::body::Body>| {
                let span = span_of(request.uri().path(), request.headers());
                let deadline = grpc_timeout(request.headers());
                let call = stack.clone().oneshot(request);
                async move {
                    let answered = match deadline {
                        None => call.await,
                        Some(deadline) => match tokio::time::timeout(deadline, call).await {
                            Ok(answered) => answered,
                            // What tonic's server answers when the deadline passes.
                            Err(_) => Ok(tonic::Status::cancelled("Timeout expired").into_http()),
                        },
                    };
                    Ok(answered.unwrap_or_else(|never: Infallible| match never {}))
                }
                .instrument(span)
            },
        ))
    }

    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let health = self.health.clone();
        for (name, db) in &self.names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
            tokio::spawn(follow_database(
                health.clone(),
                name,
                db.clone(),
                self.bus.clone(),
                shutdown.child_token(),
            ));
        }
        health.set_service_status("", ServingStatus::Serving).await;
        let names: Vec<&'static str> = self.names.iter().map(|(name, _)| *name).collect();
        let signal = async move {
            shutdown.cancelled().await;
            for name in &names {
                health
                    .set_service_status(*name, ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
        };
        tonic::transport::Server::builder()
            // The span is entered around everything below, so metrics, handlers and
            // calls to other services all happen inside the caller's trace.
            .trace_fn(call_span)
            // Outermost layer: every call is counted, whatever answers it.
            .layer(GrpcMetricsLayer::new())
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(without_nagle(listener), signal)
            .await?;
        Ok(())
    }
}

/// Accepted connections with Nagle's algorithm off: without it, an answer larger
/// than one segment waited for the client's delayed ACK (about 40 ms a call). tonic
/// sets this only on listeners it binds itself.
fn without_nagle(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "TCP_NODELAY not set");
            }
        })
    })
}

/// The span of one call: `otel.name` is the method path so traces read like the
/// API, and the parent is whatever `traceparent` the caller sent.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    span_of(request.uri().path(), request.headers())
}

fn span_of(path: &str, headers: &http::HeaderMap) -> tracing::Span {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "grpc",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        request_id,
    );
    trace_context::set_parent_from(&span, headers);
    span
}

/// The caller's deadline from `grpc-timeout` (an integer of at most 8 digits and
/// a unit, gRPC over HTTP/2); none when absent or malformed, as in tonic's server.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (amount, unit) = value.split_at(split);
    if amount.is_empty() || amount.len() > 8 {
        return None;
    }
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Keeps `name`'s health in step with its database until shutdown.
async fn follow_database(
    health: HealthReporter,
    name: &'static str,
    db: Db,
    bus: Option<Arc<dyn Bus>>,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DB_PROBE_INTERVAL) => {}
        }
        let db_up = tokio::time::timeout(DB_PROBE_INTERVAL, db.ping())
            .await
            .unwrap_or(false);
        let bus_up = bus.as_ref().is_none_or(|b| b.is_healthy());
        let up = db_up && bus_up;
        if up != serving {
            serving = up;
            if up {
                tracing::info!(service = name, "database and bus reachable again: serving");
            } else {
                tracing::warn!(service = name, db_up, bus_up, "not serving");
            }
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(name, status).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt as _, TraceId};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        let timeout = |v: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(timeout("7u"), Some(Duration::from_micros(7)));
        for bad in ["", "S", "12", "123456789S", "-1S", "1x"] {
            assert_eq!(timeout(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn a_call_span_joins_the_callers_trace_and_names_the_method() {
        tracing::subscriber::with_default(crate::trace_context::test_subscriber(), || {
            let request = http::Request::post("/agora.user.v1.UserService/GetProfile")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(())
                .unwrap();

            let span = call_span(&request);

            let trace = span.context().span().span_context().trace_id();
            assert_eq!(
                trace,
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
            );
            assert_eq!(span.metadata().unwrap().name(), "grpc");
        });
    }
}
