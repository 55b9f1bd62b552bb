//! Every way a gateway request can fail, and the one place that turns any of them
//! into a response: Conduit-shaped JSON (`{"errors": {"<field>": ["<message>"]}}`)
//! for REST clients, a trailers-only gRPC status for gRPC and gRPC-web clients.
//!
//! Upstream messages are shown for the codes our services decide on purpose
//! (validation, not found, conflicts...); for INTERNAL, UNKNOWN and the like the
//! client sees "internal error" and the cause goes to the log only.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value as Json, json};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::transcode::response::lower_camel;

/// A failed gateway request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the path.
    #[error("no route for this path")]
    RouteNotFound,
    /// A route matches the path, but not the method.
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    /// The body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body's content type is not JSON.
    #[error("unsupported content type {0:?}; send application/json")]
    UnsupportedMediaType(String),
    /// Malformed JSON, wrong types, bad query or path values.
    #[error("{0}")]
    BadRequest(String),
    /// The client's rate budget is spent.
    #[error("too many requests")]
    RateLimited {
        /// When the next request would be allowed.
        retry_after: Duration,
    },
    /// The request did not finish within the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// No upstream is configured for the RPC's package.
    #[error("no upstream configured for {0}")]
    NoUpstream(String),
    /// A gRPC call names a service the gateway does not expose.
    #[error("service {0} is not available through the gateway")]
    ServiceNotExposed(String),
    /// The upstream answered with an error status.
    #[error("upstream: {0}")]
    Upstream(Status),
    /// A fault of the gateway itself.
    #[error("internal: {0}")]
    Internal(String),
}

/// How the client speaks, which decides the error's wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// JSON over HTTP.
    Json,
    /// gRPC: a status in headers (trailers-only response).
    Grpc,
    /// gRPC-web answered before reaching the gRPC-web translation (edge rejections):
    /// the same status headers, with a content type gRPC-web clients accept.
    GrpcWeb,
}

impl Protocol {
    /// From the request's content type: `application/grpc-web...`, `application/grpc...`,
    /// anything else is JSON.
    pub fn of(headers: &http::HeaderMap) -> Self {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/grpc-web") {
            Protocol::GrpcWeb
        } else if content_type.starts_with("application/grpc") {
            Protocol::Grpc
        } else {
            Protocol::Json
        }
    }
}

/// Turns any failure into the response the client gets. The only place that does.
pub fn respond(error: GatewayError, protocol: Protocol) -> Response {
    error.log();
    match protocol {
        Protocol::Json => json_response(&error),
        Protocol::Grpc => grpc_response(&error),
        Protocol::GrpcWeb => {
            let mut response = grpc_response(&error);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc-web+proto"),
            );
            response
        }
    }
}

impl GatewayError {
    /// The HTTP status for REST clients.
    pub fn http_status(&self) -> StatusCode {
        match self {
            GatewayError::RouteNotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::NoUpstream(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::ServiceNotExposed(_) => StatusCode::NOT_FOUND,
            GatewayError::Upstream(status) => http_status_for(status.code()),
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC code for gRPC clients.
    pub fn grpc_code(&self) -> Code {
        match self {
            GatewayError::RouteNotFound | GatewayError::ServiceNotExposed(_) => Code::Unimplemented,
            GatewayError::MethodNotAllowed => Code::Unimplemented,
            GatewayError::PayloadTooLarge => Code::ResourceExhausted,
            GatewayError::UnsupportedMediaType(_) | GatewayError::BadRequest(_) => {
                Code::InvalidArgument
            }
            GatewayError::RateLimited { .. } => Code::ResourceExhausted,
            GatewayError::Timeout => Code::DeadlineExceeded,
            GatewayError::NoUpstream(_) => Code::Unavailable,
            GatewayError::Upstream(status) => status.code(),
            GatewayError::Internal(_) => Code::Internal,
        }
    }

    /// The `errors` object of the JSON body.
    pub fn errors(&self) -> Map<String, Json> {
        match self {
            GatewayError::Upstream(status) => upstream_errors(status),
            GatewayError::Internal(_) => body_error("internal error"),
            other => body_error(&other.to_string()),
        }
    }

    /// When the client may try again: the edge's own budgets, or a service's
    /// RESOURCE_EXHAUSTED carrying `google.rpc.RetryInfo` (a locked account).
    fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::RateLimited { retry_after } => Some(*retry_after),
            GatewayError::Upstream(status) if status.code() == Code::ResourceExhausted => status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay),
            _ => None,
        }
    }

    fn log(&self) {
        match self {
            GatewayError::Internal(cause) => tracing::error!(%cause, "gateway fault"),
            GatewayError::NoUpstream(package) => {
                tracing::error!(%package, "no upstream configured")
            }
            GatewayError::Upstream(status) if !is_client_visible(status.code()) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "upstream failed")
            }
            GatewayError::Timeout => tracing::warn!("request timed out"),
            other => tracing::debug!(error = %other, "request refused"),
        }
    }
}

/// The standard gRPC -> HTTP mapping, with Conduit's 422 for validation failures.
pub fn http_status_for(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        // 499 "client closed request" (nginx); there is no standard constant.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::REQUEST_TIMEOUT),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Codes whose upstream message is meant for the client.
fn is_client_visible(code: Code) -> bool {
    !matches!(
        code,
        Code::Unknown | Code::Internal | Code::DataLoss | Code::Unavailable | Code::Ok
    )
}

fn body_error(message: &str) -> Map<String, Json> {
    let mut errors = Map::new();
    errors.insert("body".into(), json!([message]));
    errors
}

fn upstream_errors(status: &Status) -> Map<String, Json> {
    if !is_client_visible(status.code()) {
        return body_error(match status.code() {
            Code::Unavailable => "service unavailable",
            _ => "internal error",
        });
    }
    let mut errors = Map::new();
    if let Some(bad_request) = status.get_details_bad_request() {
        for violation in bad_request.field_violations {
            let key = field_key(&violation.field);
            let entry = errors.entry(key).or_insert_with(|| Json::Array(Vec::new()));
            if let Json::Array(messages) = entry {
                messages.push(Json::String(violation.description));
            }
        }
    }
    if errors.is_empty() {
        let message = if status.message().is_empty() {
            default_message(status.code())
        } else {
            status.message()
        };
        return body_error(message);
    }
    errors
}

/// `user.email` -> `email`, `article.tag_list[2]` -> `tagList`: Conduit clients key
/// errors by the bare field name.
pub fn field_key(field: &str) -> String {
    let last = field.rsplit('.').next().unwrap_or(field);
    let last = last.split('[').next().unwrap_or(last);
    if last.is_empty() {
        "body".to_owned()
    } else {
        lower_camel(last)
    }
}

fn default_message(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => "invalid request",
        Code::Unauthenticated => "not signed in",
        Code::PermissionDenied => "not allowed",
        Code::NotFound => "not found",
        Code::AlreadyExists | Code::Aborted => "conflict",
        Code::ResourceExhausted => "too many requests",
        Code::DeadlineExceeded => "request timed out",
        Code::Unimplemented => "not implemented",
        Code::Cancelled => "request cancelled",
        Code::Unavailable => "service unavailable",
        _ => "internal error",
    }
}

fn json_response(error: &GatewayError) -> Response {
    let body = json!({ "errors": error.errors() });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = error.http_status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(retry_after) = error.retry_after() {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_seconds(retry_after)),
        );
    }
    response
}

fn grpc_response(error: &GatewayError) -> Response {
    let status = match error {
        // Pass the upstream status through whole (details included) when it is
        // meant for the client.
        GatewayError::Upstream(status) if is_client_visible(status.code()) => status.clone(),
        GatewayError::Upstream(status) => {
            Status::new(status.code(), default_message(status.code()))
        }
        GatewayError::Internal(_) => Status::internal("internal error"),
        other => Status::new(other.grpc_code(), other.to_string()),
    };
    let mut response = status.into_http::<Body>();
    if let Some(retry_after) = error.retry_after() {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_seconds(retry_after)),
        );
    }
    response
}

/// Whole seconds, rounded up and at least 1, as `retry-after` wants.
fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tonic_types::ErrorDetails;

    async fn body_of(response: Response) -> Json {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn each_grpc_code_maps_to_its_http_status() {
        let cases = [
            (Code::InvalidArgument, 422),
            (Code::FailedPrecondition, 422),
            (Code::OutOfRange, 422),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Unimplemented, 501),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
        ];
        for (code, expected) in cases {
            let error = GatewayError::Upstream(Status::new(code, "m"));
            assert_eq!(error.http_status().as_u16(), expected, "{code:?}");
        }
    }

    #[tokio::test]
    async fn field_violations_become_the_conduit_422_shape() {
        let details = ErrorDetails::with_bad_request(vec![
            tonic_types::FieldViolation::new("user.email", "has already been taken"),
            tonic_types::FieldViolation::new("user.email", "is invalid"),
            tonic_types::FieldViolation::new("article.tag_list[1]", "is too long"),
        ]);
        let status = Status::with_error_details(Code::InvalidArgument, "invalid", details);
        let response = respond(GatewayError::Upstream(status), Protocol::Json);
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body_of(response).await,
            json!({"errors": {"email": ["has already been taken", "is invalid"], "tagList": ["is too long"]}})
        );
    }

    #[tokio::test]
    async fn already_exists_keeps_field_violations_with_409() {
        let details =
            ErrorDetails::with_bad_request_violation("username", "has already been taken");
        let status = Status::with_error_details(Code::AlreadyExists, "taken", details);
        let response = respond(GatewayError::Upstream(status), Protocol::Json);
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            body_of(response).await,
            json!({"errors": {"username": ["has already been taken"]}})
        );
    }

    #[tokio::test]
    async fn errors_without_details_use_the_message_under_body() {
        let response = respond(
            GatewayError::Upstream(Status::not_found("article not found")),
            Protocol::Json,
        );
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            body_of(response).await,
            json!({"errors": {"body": ["article not found"]}})
        );
    }

    #[tokio::test]
    async fn internal_messages_never_reach_the_client() {
        for status in [
            Status::internal("SELECT * FROM users failed: disk"),
            Status::unknown("panic at foo.rs:12"),
        ] {
            let response = respond(GatewayError::Upstream(status.clone()), Protocol::Json);
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(
                body_of(response).await,
                json!({"errors": {"body": ["internal error"]}})
            );
            let grpc = respond(GatewayError::Upstream(status), Protocol::Grpc);
            let message = grpc.headers()["grpc-message"].to_str().unwrap().to_owned();
            assert_eq!(message, "internal%20error");
        }
    }

    #[tokio::test]
    async fn gateway_errors_have_their_statuses_and_json_bodies() {
        let cases = [
            (GatewayError::RouteNotFound, 404),
            (GatewayError::MethodNotAllowed, 405),
            (GatewayError::PayloadTooLarge, 413),
            (GatewayError::UnsupportedMediaType("text/plain".into()), 415),
            (GatewayError::BadRequest("invalid JSON body".into()), 400),
            (GatewayError::Timeout, 504),
            (GatewayError::NoUpstream("agora.x.v1".into()), 503),
            (GatewayError::Internal("boom".into()), 500),
        ];
        for (error, expected) in cases {
            let response = respond(error, Protocol::Json);
            assert_eq!(response.status().as_u16(), expected);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = body_of(response).await;
            assert!(body["errors"]["body"][0].is_string(), "{body}");
        }
    }

    #[test]
    fn rate_limits_say_when_to_retry() {
        let error = GatewayError::RateLimited {
            retry_after: Duration::from_millis(1500),
        };
        let response = respond(error, Protocol::Json);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }

    #[test]
    fn grpc_clients_get_a_trailers_only_status() {
        let response = respond(
            GatewayError::ServiceNotExposed("x.Y".into()),
            Protocol::Grpc,
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "12");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/grpc");
    }

    #[test]
    fn grpc_web_rejections_at_the_edge_say_grpc_web() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web-text"),
        );
        assert_eq!(Protocol::of(&headers), Protocol::GrpcWeb);
        let error = GatewayError::RateLimited {
            retry_after: Duration::from_secs(1),
        };
        let response = respond(error, Protocol::GrpcWeb);
        assert_eq!(response.headers()["grpc-status"], "8");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/grpc-web+proto"
        );
    }

    #[test]
    fn field_keys_are_the_last_segment_in_lower_camel() {
        assert_eq!(field_key("user.email"), "email");
        assert_eq!(field_key("article.tag_list[0]"), "tagList");
        assert_eq!(field_key("title"), "title");
        assert_eq!(field_key(""), "body");
    }
}
