//! The edge: cross-cutting behaviour every request goes through, as one visible
//! stack of tower layers (see [`wrap`]). Each layer says why it is there and why in
//! that position. Rejections made here go through `error::respond` like any other.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderName, HeaderValue, Method, header};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use agora_kit::net::IpRange;

use crate::contract::Contract;
use crate::error::{GatewayError, Protocol, respond};
use crate::route::{Route, RouteTable};
use crate::upstream::ClientIp;
use crate::{forwarded, metrics};

/// What the edge layers need from the configuration.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Allowed CORS origins; `*` allows any, empty allows none.
    pub cors_origins: Vec<String>,
    /// Largest declared body accepted.
    pub body_limit_bytes: usize,
    /// Deadline for producing response headers.
    pub request_timeout: Duration,
    /// Requests per second per client IP (burst twice that); 0 disables.
    pub rate_limit_per_second: u32,
    /// Requests per minute per client IP on auth routes; 0 disables.
    pub auth_rate_limit_per_minute: u32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpRange>,
    /// Which requests draw on the sign-in budget.
    pub sign_in: Arc<SignInRoutes>,
}

/// The requests that draw on the sign-in budget, derived from the contract: every
/// call of a service marked `agora.options.v1.sign_in_budget`. A request is
/// classified the way the gateway then serves it — REST by the route table's own
/// lookup (trailing slash and all), over the sign-in routes alone, gRPC and
/// gRPC-web by the proxy's reading of the path — so no spelling the gateway
/// accepts escapes the budget: a path the whole table serves as a sign-in call
/// matches that call's route here too. The short table keeps the check cheap.
#[derive(Debug)]
pub struct SignInRoutes {
    routes: RouteTable,
    services: BTreeSet<String>,
}

impl SignInRoutes {
    pub fn new(contract: &Contract, routes: &RouteTable) -> Self {
        let services: BTreeSet<String> = contract
            .pool
            .services()
            .filter(|service| contract.draws_sign_in_budget(service))
            .map(|service| service.full_name().to_owned())
            .collect();
        let routes = routes
            .only(|route: &Route| services.contains(route.method.parent_service().full_name()));
        SignInRoutes { routes, services }
    }

    /// Whether this request draws on the sign-in budget.
    pub fn covers(&self, protocol: Protocol, method: &Method, path: &str) -> bool {
        match protocol {
            Protocol::Grpc | Protocol::GrpcWeb => {
                self.services.contains(crate::proxy::service_of(path))
            }
            Protocol::Json => self.routes.resolve(method, path).is_ok(),
        }
    }
}

/// Grace beyond the request timeout, so the upstream's own DEADLINE_EXCEEDED (it
/// got the same deadline as `grpc-timeout`) usually answers first.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// Wraps the gateway's routes in the edge stack. Outermost first.
pub fn wrap(router: Router, config: &EdgeConfig) -> Router {
    let limits = Arc::new(RateLimits::new(config));
    let timeout = config.request_timeout + TIMEOUT_GRACE;
    let body_limit = config.body_limit_bytes;
    let trusted: Arc<[IpRange]> = config.trusted_proxies.as_slice().into();
    router.layer(
        ServiceBuilder::new()
            // Request id first, so every log line and every response below, rejections
            // included, carries it; an id sent by the client is kept for tracing across hops.
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            // One span per request, opened before anything can reject, so 429s and 413s
            // are logged with method, path and id too. It continues the caller's trace.
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            // Metrics outside every rejection, so 429s, 413s and 504s are counted.
            .layer(from_fn(metrics::record))
            // Echo the id on the response, inside the span so it is logged with it.
            .layer(PropagateRequestIdLayer::x_request_id())
            // Security headers on every response, including CORS preflights and rejections.
            .layer(from_fn_with_state(config.sign_in.clone(), security_headers))
            // CORS before rate limiting and the body limit: a browser can read a 429
            // or 413 only if it carries CORS headers; preflights cost no budget.
            .layer(cors(&config.cors_origins))
            // The client address (the peer, or whom a trusted proxy says it served),
            // needed by the rate limiter and forwarded as x-real-ip.
            .layer(from_fn_with_state(trusted, client_ip))
            // Rate limits before any work: a flood is refused before bodies are read.
            .layer(from_fn_with_state(limits, rate_limit))
            // The timeout bounds everything after admission, slow uploads included.
            .layer(from_fn_with_state(timeout, request_timeout))
            // Declared oversize bodies are refused before reading; the REST handler
            // also caps what it actually reads, for chunked bodies.
            .layer(from_fn_with_state(body_limit, body_size_limit)),
    )
}

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
        rpc = tracing::field::Empty,
        otel.kind = "server",
        otel.name = tracing::field::Empty,
    );
    // Before the span is entered: afterwards its parent can no longer change.
    agora_kit::trace_context::set_parent_from(&span, request.headers());
    span
}

/// The helmet set, for an API that serves JSON and nothing a browser should render.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    // An API needs no powerful browser feature.
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), \
         microphone=(), payment=(), usb=()",
    ),
    ("referrer-policy", "no-referrer"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-download-options", "noopen"),
    ("x-frame-options", "DENY"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

async fn security_headers(
    State(sign_in): State<Arc<SignInRoutes>>,
    request: Request,
    next: Next,
) -> Response {
    // Answers to a signed-in caller are theirs alone, and sign-in answers carry
    // tokens: no cache, shared or private, may keep them.
    let call = SignInCall(sign_in.covers(
        Protocol::of(request.headers()),
        request.method(),
        request.uri().path(),
    ));
    let private = call.0 || request.headers().contains_key(header::AUTHORIZATION);
    // Classified once: the rate limiter, further in, reads it.
    let mut request = request;
    request.extensions_mut().insert(call);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if private {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    for (name, value) in SECURITY_HEADERS {
        headers
            .entry(HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    }
    // Names the software behind the gateway; nothing a client needs.
    headers.remove("x-powered-by");
    headers.remove(header::SERVER);
    response
}

/// Whether a request draws on the sign-in budget, as `security_headers` found.
#[derive(Debug, Clone, Copy)]
struct SignInCall(bool);

/// Headers a browser may send: JSON/REST, gRPC-web and SSE reconnects.
const CORS_ALLOW_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "x-request-id",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
];

/// Headers a browser script may read: gRPC-web puts its status in headers.
const CORS_EXPOSE_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
    "retry-after",
];

fn cors(origins: &[String]) -> CorsLayer {
    let names = |list: &[&'static str]| {
        list.iter()
            .map(|h| HeaderName::from_static(h))
            .collect::<Vec<_>>()
    };
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Exact matches only; an empty list allows no cross-origin access at all.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(names(CORS_ALLOW_HEADERS))
        .expose_headers(names(CORS_EXPOSE_HEADERS))
        .max_age(Duration::from_secs(3600))
}

async fn client_ip(
    State(trusted): State<Arc<[IpRange]>>,
    mut request: Request,
    next: Next,
) -> Response {
    // The connection's peer, unless it is a trusted proxy: then the address that
    // proxy says it served. X-Forwarded-For from anyone else is a client claim.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| {
            ClientIp(forwarded::client_address(
                addr.ip(),
                request.headers(),
                &trusted,
            ))
        });
    if let Some(ip) = peer {
        request.extensions_mut().insert(ip);
    }
    next.run(request).await
}

/// Per-IP budgets: one for all routes, a stricter one for credential routes,
/// where guessing passwords is the threat.
pub struct RateLimits {
    general: Option<DefaultKeyedRateLimiter<IpAddr>>,
    auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    seen: AtomicU64,
    /// Made once: building a clock calibrates it (cpuid and a TSC read), which
    /// cost more than the rest of the rate check when done per request.
    clock: DefaultClock,
}

/// Forget idle clients every so many requests, so the key map does not grow forever.
const RETAIN_EVERY: u64 = 4096;

impl RateLimits {
    fn new(config: &EdgeConfig) -> Self {
        let general = NonZeroU32::new(config.rate_limit_per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let auth = NonZeroU32::new(config.auth_rate_limit_per_minute)
            .map(|rate| DefaultKeyedRateLimiter::keyed(Quota::per_minute(rate)));
        RateLimits {
            general,
            auth,
            seen: AtomicU64::new(0),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when the client must wait before trying again.
    fn check(&self, ip: IpAddr, sign_in: bool) -> Result<(), Duration> {
        if self.seen.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            for limiter in [&self.general, &self.auth].into_iter().flatten() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        let now = self.clock.now();
        if let Some(limiter) = &self.general {
            limiter.check_key(&ip).map_err(|n| n.wait_time_from(now))?;
        }
        if sign_in && let Some(limiter) = &self.auth {
            limiter.check_key(&ip).map_err(|n| n.wait_time_from(now))?;
        }
        Ok(())
    }
}

/// The bucket an address spends from. An IPv6 client usually holds a whole /64,
/// so budgets per single address would be trivially evaded.
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

async fn rate_limit(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    // Without a known peer (in-process tests) everyone shares one bucket.
    let ip = request
        .extensions()
        .get::<ClientIp>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| rate_key(c.0));
    let sign_in = request
        .extensions()
        .get::<SignInCall>()
        .is_some_and(|call| call.0);
    match limits.check(ip, sign_in) {
        Ok(()) => next.run(request).await,
        Err(retry_after) => respond(
            GatewayError::RateLimited { retry_after },
            Protocol::of(request.headers()),
        ),
    }
}

async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let protocol = Protocol::of(request.headers());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => respond(GatewayError::Timeout, protocol),
    }
}

async fn body_size_limit(
    State(limit): State<usize>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let protocol = Protocol::of(request.headers());
    // gRPC bodies are streams of messages; the services cap message sizes themselves.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if protocol == Protocol::Json && length > limit as u64 => {
            respond(GatewayError::PayloadTooLarge, protocol)
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_in_routes() -> Arc<SignInRoutes> {
        let contract = Contract::agora().unwrap();
        let routes = RouteTable::build(&contract).unwrap();
        Arc::new(SignInRoutes::new(&contract, &routes))
    }

    fn limits(per_second: u32, auth_per_minute: u32) -> RateLimits {
        RateLimits::new(&EdgeConfig {
            cors_origins: vec![],
            body_limit_bytes: 1024,
            request_timeout: Duration::from_secs(1),
            rate_limit_per_second: per_second,
            auth_rate_limit_per_minute: auth_per_minute,
            trusted_proxies: vec![],
            sign_in: sign_in_routes(),
        })
    }

    fn request(method: &str, path: &str, content_type: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::empty())
            .unwrap()
    }

    fn post(path: &str) -> Request {
        request("POST", path, "application/json")
    }

    #[test]
    fn the_general_budget_allows_a_burst_of_twice_the_rate() {
        let limits = limits(5, 100);
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..10 {
            assert!(limits.check(ip, false).is_ok());
        }
        assert!(limits.check(ip, false).is_err());
        // Another client has its own budget.
        assert!(limits.check([10, 0, 0, 2].into(), false).is_ok());
    }

    #[test]
    fn auth_routes_have_a_stricter_budget() {
        let limits = limits(1000, 3);
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(limits.check(ip, true).is_ok());
        }
        let wait = limits.check(ip, true).unwrap_err();
        assert!(wait > Duration::ZERO);
        assert!(limits.check(ip, false).is_ok());
    }

    #[test]
    fn zero_disables_a_budget() {
        let limits = limits(0, 0);
        for _ in 0..1000 {
            assert!(limits.check([10, 0, 0, 1].into(), true).is_ok());
        }
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(c));
        let v4: IpAddr = [192, 0, 2, 1].into();
        assert_eq!(rate_key(v4), v4);
    }

    #[test]
    fn every_spelling_of_a_sign_in_call_draws_on_the_budget() {
        let routes = sign_in_routes();
        let covered =
            |r: Request| routes.covers(Protocol::of(r.headers()), r.method(), r.uri().path());
        for drawn in [
            post("/api/users"),
            post("/api/users/"),
            post("/api/users/login"),
            post("/api/users/login/"),
            post("/api/auth/refresh/"),
            post("/api/auth/logout-all"),
            request("DELETE", "/api/auth/sessions/abc", "application/json"),
            request("GET", "/.well-known/jwks.json", "application/json"),
            request(
                "POST",
                "/agora.auth.v1.AuthService/Login",
                "application/grpc",
            ),
            request(
                "POST",
                "//agora.auth.v1.AuthService/Login",
                "application/grpc",
            ),
            request(
                "POST",
                "/agora.auth.v1.AuthService/Login",
                "application/grpc-web+proto",
            ),
            request(
                "POST",
                "/agora.auth.v1.AuthService/Login",
                "application/grpc-web-text",
            ),
        ] {
            let shown = format!("{} {}", drawn.method(), drawn.uri());
            assert!(covered(drawn), "{shown} escapes the sign-in budget");
        }
        for free in [
            request("GET", "/api/user", "application/json"),
            request("GET", "/api/profiles/jake", "application/json"),
            request(
                "POST",
                "/agora.post.v1.PostService/GetArticle",
                "application/grpc",
            ),
            // Not a route: answered 404 without reaching a service.
            post("/api/users/%6Cogin"),
        ] {
            let shown = format!("{} {}", free.method(), free.uri());
            assert!(
                !covered(free),
                "{shown} should not draw on the sign-in budget"
            );
        }
    }
}
