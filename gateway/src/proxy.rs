//! gRPC pass-through: a gRPC call is forwarded whole, bodies streaming both ways,
//! to the upstream that owns its service. gRPC-web is turned into gRPC in front of
//! this by `tonic_web::GrpcWebLayer` (see [`serve_grpc`]).
//!
//! Only services with at least one http-annotated method are forwarded; calls to
//! anything else (the `*InternalService`s, unknown names) answer UNIMPLEMENTED
//! without touching an upstream.
//!
//! The call continues the gateway's trace: the request span's context replaces
//! whatever `traceparent` the client sent (it is the span's parent already).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Version, header};
use http_body_util::{BodyStream, StreamBody};
use tower::{Layer as _, Service, ServiceExt as _};

use crate::contract::Contract;
use crate::error::{GatewayError, Protocol, respond};
use crate::metrics::MatchedRoute;
use crate::upstream::{ClientIp, REAL_IP, Upstreams};

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1);
/// HTTP/2 forbids most of them outright.
const HOP_BY_HOP: &[header::HeaderName] = &[
    header::CONNECTION,
    header::HOST,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The service a gRPC path (`/package.Service/Method`) calls, as the proxy reads
/// it; the rate limiter reads it the same way, so no spelling escapes a budget.
pub fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .split_once('/')
        .map_or("", |(service, _)| service)
}

/// Forwards gRPC requests to the owning upstream.
#[derive(Debug, Clone)]
pub struct GrpcProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    exposed: BTreeSet<String>,
    /// `/package.Service/Method` of every method of the exposed services: the
    /// route label for metrics, bounded by the contract.
    methods: BTreeSet<String>,
    upstreams: Upstreams,
}

impl GrpcProxy {
    /// A proxy for the given exposed services (full names of services in
    /// `contract`) and upstreams.
    pub fn new(contract: &Contract, exposed: BTreeSet<String>, upstreams: Upstreams) -> Self {
        let methods = exposed
            .iter()
            .filter_map(|name| contract.pool.get_service_by_name(name))
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .map(|method| crate::route::grpc_path(&method))
            .collect();
        GrpcProxy {
            inner: Arc::new(Inner {
                exposed,
                methods,
                upstreams,
            }),
        }
    }

    async fn forward(
        self,
        mut request: Request<tonic::body::Body>,
    ) -> Result<Response, GatewayError> {
        // `/package.Service/Method`
        let service = service_of(request.uri().path()).to_owned();
        if !self.inner.exposed.contains(&service) {
            return Err(GatewayError::ServiceNotExposed(service));
        }
        let path = request.uri().path();
        if self.inner.methods.contains(path) {
            tracing::Span::current().record("rpc", path);
            if let Some(matched) = request.extensions().get::<MatchedRoute>() {
                matched.set(path);
            }
        }
        let package = service.rsplit_once('.').map_or("", |(package, _)| package);
        let channel = self.inner.upstreams.for_package(package)?;

        let client = request.extensions().get::<ClientIp>().copied();
        let headers = request.headers_mut();
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        if headers.get(header::TE).is_some_and(|te| te != "trailers") {
            headers.remove(header::TE);
        }
        // The address the service sees is the one the gateway saw, never a claim.
        headers.remove(REAL_IP);
        if let Some(ClientIp(ip)) = client
            && let Ok(value) = HeaderValue::try_from(ip.to_string())
        {
            headers.insert(REAL_IP, value);
        }
        agora_kit::trace_context::inject(&tracing::Span::current(), headers);
        *request.version_mut() = Version::HTTP_2;
        let request = request.map(without_size_hint);

        let response = channel
            .oneshot(request)
            .await
            .map_err(|e| GatewayError::Upstream(tonic::Status::unavailable(e.to_string())))?;
        Ok(response.map(Body::new))
    }
}

/// Drops the body's size hint. tonic-web keeps the base64 size hint of a
/// grpc-web-text body on the decoded body, and hyper would announce that wrong
/// length upstream as `content-length` (the service then resets the stream).
fn without_size_hint(body: tonic::body::Body) -> tonic::body::Body {
    tonic::body::Body::new(StreamBody::new(BodyStream::new(body)))
}

impl Service<Request<tonic::body::Body>> for GrpcProxy {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the channel's business, checked per call in `forward`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let proxy = self.clone();
        Box::pin(async move {
            Ok(proxy
                .forward(request)
                .await
                .unwrap_or_else(|error| respond(error, Protocol::Grpc)))
        })
    }
}

/// The service for every `application/grpc*` request: gRPC-web translated to gRPC,
/// then the proxy. Plain gRPC over HTTP/2 passes the translation untouched.
pub async fn serve_grpc(proxy: GrpcProxy, request: Request<Body>) -> Response {
    let service = tonic_web::GrpcWebLayer::new().layer(proxy);
    match service.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}
