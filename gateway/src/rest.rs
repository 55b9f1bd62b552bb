//! The one generic REST handler: route lookup, request message from body/query/
//! path, the upstream call, and the JSON answer (or an SSE stream for
//! server-streaming RPCs). No endpoint has code of its own.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse as _;
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use prost_reflect::{DynamicMessage, ReflectMessage as _, Value};
use tonic::codec::Streaming;

use crate::error::GatewayError;
use crate::metrics::MatchedRoute;
use crate::route::{BodyRule, Route, RouteMiss, RouteTable, find_field};
use crate::transcode::{build_message, render_message, wire};
use crate::upstream::{self, ClientIp, Upstreams};

/// How often an idle event stream sends a comment, so proxies keep it open.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the REST handler needs, shared by every request.
#[derive(Debug)]
pub struct Rest {
    /// Routes from the contract.
    pub routes: RouteTable,
    /// Channels by package.
    pub upstreams: Upstreams,
    /// Deadline of unary calls.
    pub timeout: Duration,
    /// Largest accepted body.
    pub body_limit: usize,
}

impl Rest {
    /// Serves one REST request. Every failure is answered through `error::respond`.
    pub async fn handle(self: Arc<Self>, request: Request<Body>) -> Result<Response, GatewayError> {
        let (parts, body) = request.into_parts();
        let (route, captures) = self
            .routes
            .resolve(&parts.method, parts.uri.path())
            .map_err(|miss| match miss {
                RouteMiss::NotFound => GatewayError::RouteNotFound,
                RouteMiss::MethodNotAllowed => GatewayError::MethodNotAllowed,
            })?;
        let span = tracing::Span::current();
        span.record("rpc", route.grpc_path());
        span.record(
            "otel.name",
            format!("{} {}", parts.method, route.template.as_str()),
        );
        if let Some(matched) = parts.extensions.get::<MatchedRoute>() {
            matched.set(route.template.as_str());
        }

        let body = if route.body == BodyRule::None {
            // The rule takes no body, but a client may send one anyway (Conduit
            // clients send `{}` to follow): it is read and dropped, because a body
            // left unread on the socket breaks the connection's next request.
            read_body(body, self.body_limit).await?;
            Bytes::new()
        } else {
            let body = read_body(body, self.body_limit).await?;
            check_content_type(&parts.headers, &body)?;
            body
        };
        let message = build_message(&route, &captures, parts.uri.query(), &body)
            .map_err(|e| GatewayError::BadRequest(e.0))?;

        let channel = self.upstreams.for_method(&route.method)?;
        let metadata = upstream::forwarded_metadata(
            &parts.headers,
            parts.extensions.get::<ClientIp>().copied(),
        );

        if route.method.is_server_streaming() {
            let stream =
                upstream::call_server_streaming(channel, &route.method, message, metadata).await?;
            return Ok(sse_response(stream));
        }
        let call = upstream::call_unary(channel, &route.method, message, metadata, self.timeout);
        let reply = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| GatewayError::Timeout)??;
        json_response(&route, &reply)
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge)
        }
        Err(error) => {
            // A client that hangs up mid-body, or sends a malformed chunked body.
            let too_large = std::error::Error::source(&*error)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(GatewayError::PayloadTooLarge)
            } else {
                Err(GatewayError::BadRequest(format!(
                    "could not read the body: {error}"
                )))
            }
        }
    }
}

/// JSON bodies only; a missing content type is taken as JSON, since some Conduit
/// clients omit it.
fn check_content_type(headers: &HeaderMap, body: &Bytes) -> Result<(), GatewayError> {
    if body.is_empty() {
        return Ok(());
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType(essence.to_owned()))
    }
}

/// The answer's JSON, written from its encoded bytes.
fn json_response(route: &Route, reply: &[u8]) -> Result<Response, GatewayError> {
    if route.success == StatusCode::NO_CONTENT {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let output = route.method.output();
    // Most answers fit; a page of articles grows it a few times.
    let mut json = Vec::with_capacity(reply.len() * 2 + 64);
    let written = match &route.response_body {
        Some(field) => match find_field(&output, field) {
            Some(field) => wire::write_field(&mut json, &field, reply),
            None => {
                json.extend_from_slice(b"null");
                Ok(())
            }
        },
        None => wire::write_message(&mut json, &output, reply),
    };
    written.map_err(|e| GatewayError::Internal(e.to_string()))?;
    let mut response = Response::new(Body::from(json));
    *response.status_mut() = route.success;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn sse_response(stream: Streaming<DynamicMessage>) -> Response {
    let mut response = Sse::new(events(stream))
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response();
    // Tells nginx-style proxies not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One `data:` event per message; an upstream error ends the stream with an
/// `event: error` carrying the usual `{"errors": ...}` body.
fn events(
    stream: Streaming<DynamicMessage>,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + Send {
    futures::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        match stream.message().await {
            Ok(Some(message)) => {
                let mut event = Event::default().data(render_message(&message).to_string());
                if let Some(id) = event_id(&message) {
                    event = event.id(id);
                }
                Some((Ok(event), Some(stream)))
            }
            Ok(None) => None,
            Err(status) => {
                let errors =
                    serde_json::json!({ "errors": GatewayError::Upstream(status).errors() });
                let event = Event::default().event("error").data(errors.to_string());
                Some((Ok(event), None))
            }
        }
    })
}

/// An `id` field of the message, or of a message it holds directly, so a client
/// reconnecting with `Last-Event-ID` can say where it was.
fn event_id(message: &DynamicMessage) -> Option<String> {
    fn own_id(message: &DynamicMessage) -> Option<String> {
        let field = message.descriptor().get_field_by_name("id")?;
        if !message.has_field(&field) {
            return None;
        }
        match message.get_field(&field).as_ref() {
            Value::String(s) if !s.is_empty() && !s.contains(['\n', '\r', '\0']) => Some(s.clone()),
            Value::I64(n) => Some(n.to_string()),
            Value::U64(n) => Some(n.to_string()),
            Value::I32(n) => Some(n.to_string()),
            Value::U32(n) => Some(n.to_string()),
            _ => None,
        }
    }
    own_id(message).or_else(|| {
        message
            .fields()
            .find_map(|(_, value)| value.as_message().and_then(own_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_json_suffixed_content_types_are_accepted() {
        let body = Bytes::from_static(b"{}");
        let with = |ct: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            check_content_type(&headers, &body)
        };
        assert!(with("application/json").is_ok());
        assert!(with("application/json; charset=utf-8").is_ok());
        assert!(with("application/merge-patch+json").is_ok());
        assert!(matches!(
            with("text/plain"),
            Err(GatewayError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            with("application/x-www-form-urlencoded"),
            Err(GatewayError::UnsupportedMediaType(_))
        ));
        assert!(check_content_type(&HeaderMap::new(), &body).is_ok());
    }
}
