//! HTTP RED metrics for every request the gateway answers, and `GET /metrics`,
//! which renders the process's Prometheus recorder (`agora_kit::metrics`): in
//! `serve --target all` that includes the services' per-RPC metrics too.
//!
//! The `route` label is the http-rule template the request matched (or the gRPC
//! method path, or the fixed path such as `/healthz`), never the raw path: raw paths
//! carry slugs and usernames and would make a series per article.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, Method, header};

use agora_kit::metrics::PrometheusHandle;

/// Counter of answered requests by `method`, `route` and `status`.
pub const HTTP_REQUESTS: &str = "agora_http_requests_total";
/// Histogram of the time to response headers by `method` and `route`. Headers, not
/// the end of the body: an event stream would otherwise count for its whole life.
pub const HTTP_DURATION: &str = "agora_http_request_duration_seconds";
/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The Prometheus text exposition format, version 0.0.4.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where a handler records the route it matched, for the middleware to read once
/// the response is ready. Set at most once per request.
#[derive(Debug, Clone, Default)]
pub struct MatchedRoute(Arc<OnceLock<String>>);

impl MatchedRoute {
    /// Records the route of this request; a second call is ignored.
    pub fn set(&self, route: impl Into<String>) {
        let _ = self.0.set(route.into());
    }

    fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Installs the recorder (once per process) and describes the gateway's metrics.
pub fn install() -> PrometheusHandle {
    let handle = agora_kit::metrics::install();
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "time to response headers"
    );
    handle
}

/// Middleware: counts and times every request, rejections included.
pub async fn record(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let matched = MatchedRoute::default();
    request.extensions_mut().insert(matched.clone());
    // Fixed routes (`/healthz`, `/metrics`, ...) are matched by axum itself.
    let fixed = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());

    let response = next.run(request).await;

    let route = matched
        .get()
        .map(str::to_owned)
        .or(fixed)
        .unwrap_or_else(|| UNMATCHED.to_owned());
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        HTTP_REQUESTS,
        "method" => method,
        "route" => route,
        "status" => response.status().as_str().to_owned(),
    )
    .increment(1);
    response
}

/// Methods outside the standard set share one label, so invented methods cannot
/// create series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The body of `GET /metrics`.
pub fn exposition(handle: &PrometheusHandle) -> Response {
    let mut response = Response::new(Body::from(handle.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(EXPOSITION_CONTENT_TYPE),
    );
    response
}
