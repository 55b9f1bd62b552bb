//! agora's gateway: one HTTP listener in front of the gRPC services, speaking
//! JSON/REST (with SSE for server streams), gRPC-web and plain gRPC.
//!
//! Everything is derived from the contract (`agora_proto::FILE_DESCRIPTOR_SET`): the
//! routes come from `google.api.http` rules, success codes from agora's method
//! option, the OpenAPI document from both plus the proto comments. A new RPC with
//! an http rule needs no gateway code.
//!
//! Modules: [`contract`] (descriptors and options), [`route`] (templates and the
//! route table), [`transcode`] (JSON <-> messages), [`codec`] (tonic codec over
//! dynamic messages), [`upstream`] (channels, metadata, calls), [`rest`] (the
//! generic handler and SSE), [`proxy`] (gRPC and gRPC-web pass-through),
//! [`error`] (every failure -> one response), [`edge`] (the tower stack),
//! [`forwarded`] (the client address behind trusted proxies), [`metrics`]
//! (HTTP RED metrics, and the `/metrics` text the metrics port serves), [`health`], [`openapi`], [`server`] (the
//! listener loop).

pub mod codec;
pub mod contract;
pub mod edge;
pub mod error;
pub mod forwarded;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod rest;
pub mod route;
pub mod server;
pub mod transcode;
pub mod upstream;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;

use agora_kit::net::IpRange;

use crate::contract::Contract;
use crate::edge::EdgeConfig;
use crate::error::{GatewayError, Protocol, respond};
use crate::proxy::GrpcProxy;
use crate::rest::Rest;
use crate::route::RouteTable;
use crate::upstream::Upstreams;

pub use server::serve;

/// How the gateway is set up. Built by the caller (the `agora` binary or a test).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Upstream per proto package, e.g. "agora.user.v1": a channel
    /// (`agora_kit::upstream::remote`) or, in one process, the services themselves.
    pub upstreams: HashMap<String, agora_kit::upstream::Upstream>,
    /// Allowed CORS origins (exact match); empty = no cross-origin access. "*" = any.
    pub cors_origins: Vec<String>,
    /// Largest accepted REST request body; larger ones get 413. Default 1 MiB.
    pub body_limit_bytes: usize,
    /// Deadline of unary calls, propagated upstream as `grpc-timeout`. Default 30 s.
    pub request_timeout: Duration,
    /// Requests per second per client IP on all routes, with bursts of twice that.
    /// Default 50; 0 disables.
    pub rate_limit_per_second: u32,
    /// Requests per minute per client IP on `/api/users`, `/api/users/login` and
    /// `/api/auth/*` (and AuthService over gRPC), on top of the general budget.
    /// Default 30; 0 disables.
    pub auth_rate_limit_per_minute: u32,
    /// Peers (the ingress, load balancers) whose `X-Forwarded-For` names the
    /// client for rate limits and `x-real-ip`. Default empty: the TCP peer is the
    /// client.
    pub trusted_proxies: Vec<IpRange>,
    /// How long an HTTP/1 client may take to send its request headers before the
    /// connection is closed (slow-header attacks). Default 10 s.
    pub header_read_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            upstreams: HashMap::new(),
            cors_origins: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            rate_limit_per_second: 50,
            auth_rate_limit_per_minute: 30,
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything a request may need, shared by all of them.
#[derive(Debug, Clone)]
struct App {
    rest: Arc<Rest>,
    proxy: GrpcProxy,
    openapi: Arc<serde_json::Value>,
    required_packages: Arc<BTreeSet<String>>,
}

/// The whole gateway as an axum router (edge layers included), ready to serve or to
/// drive with `oneshot` in tests. Peer addresses come from a
/// `ConnectInfo<SocketAddr>` request extension, which [`serve`] sets.
pub fn router(config: GatewayConfig) -> anyhow::Result<Router> {
    // The recorder is process-wide; its text is served on the metrics port.
    metrics::install();
    let contract = Contract::agora()?;
    let routes = RouteTable::build(&contract)?;
    let upstreams = Upstreams::new(config.upstreams);
    let app = App {
        proxy: GrpcProxy::new(&contract, routes.exposed_services(), upstreams.clone()),
        openapi: Arc::new(openapi::document(&contract, &routes)),
        required_packages: Arc::new(routes.packages()),
        rest: Arc::new(Rest {
            routes,
            upstreams,
            timeout: config.request_timeout,
            body_limit: config.body_limit_bytes,
        }),
    };
    let sign_in = Arc::new(edge::SignInRoutes::new(&contract, &app.rest.routes));
    let edge = EdgeConfig {
        cors_origins: config.cors_origins,
        body_limit_bytes: config.body_limit_bytes,
        request_timeout: config.request_timeout,
        rate_limit_per_second: config.rate_limit_per_second,
        auth_rate_limit_per_minute: config.auth_rate_limit_per_minute,
        trusted_proxies: config.trusted_proxies,
        sign_in,
    };
    let routes = Router::new()
        .route(
            "/healthz",
            get(health::healthz).fallback(method_not_allowed),
        )
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        .route(
            "/openapi.json",
            get(openapi_json).fallback(method_not_allowed),
        )
        .fallback(dispatch)
        .with_state(app);
    Ok(edge::wrap(routes, &edge))
}

/// The OpenAPI 3.1 document of the REST surface, as served at `/openapi.json`.
pub fn openapi_document() -> serde_json::Value {
    match Contract::agora().and_then(|c| Ok((RouteTable::build(&c)?, c))) {
        Ok((routes, contract)) => openapi::document(&contract, &routes),
        // The embedded contract is checked by tests; this is not expected to happen.
        Err(error) => serde_json::json!({"openapi": "3.1.0", "error": error.to_string()}),
    }
}

/// gRPC and gRPC-web go to the proxy, everything else to the REST handler.
async fn dispatch(State(app): State<App>, request: Request) -> Response {
    match Protocol::of(request.headers()) {
        Protocol::Grpc | Protocol::GrpcWeb => proxy::serve_grpc(app.proxy, request).await,
        Protocol::Json => match app.rest.handle(request).await {
            Ok(response) => response,
            Err(error) => respond(error, Protocol::Json),
        },
    }
}

async fn readyz(State(app): State<App>) -> Response {
    health::readyz(&app.rest.upstreams, &app.required_packages).await
}

async fn openapi_json(State(app): State<App>) -> Response {
    let mut response = Response::new(Body::from(app.openapi.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn method_not_allowed() -> Response {
    respond(GatewayError::MethodNotAllowed, Protocol::Json)
}
