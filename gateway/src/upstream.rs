//! The upstream services: one channel per proto package, the metadata the gateway
//! forwards from HTTP headers, and unary / server-streaming calls with dynamic
//! messages. Calls carry the current span's trace context, so the service's spans
//! join the gateway's trace.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use agora_kit::upstream::{Upstream, UpstreamError};
use http::HeaderMap;
use http::uri::PathAndQuery;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tonic::codec::Streaming;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};

use crate::codec::{DynamicCodec, RawCodec};
use crate::error::GatewayError;
use crate::route::grpc_path;

/// Headers copied from the HTTP request into gRPC metadata. Everything else stays
/// at the edge: cookies, hop-by-hop headers and client-claimed addresses never reach
/// a service.
pub const FORWARDED_HEADERS: &[&str] = &[
    "authorization",
    "idempotency-key",
    "user-agent",
    "x-request-id",
    "last-event-id",
    "traceparent",
    "tracestate",
];

/// The metadata key carrying the client's address as the gateway saw it.
pub const REAL_IP: &str = "x-real-ip";

/// The peer address of the connection a request came on, set by the server loop
/// (or by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Upstreams by proto package, e.g. `agora.user.v1`.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    channels: HashMap<String, Upstream>,
}

impl Upstreams {
    /// Wraps the configured channels.
    pub fn new(channels: HashMap<String, Upstream>) -> Self {
        Upstreams { channels }
    }

    /// The channel for a package.
    pub fn for_package(&self, package: &str) -> Result<Upstream, GatewayError> {
        self.channels
            .get(package)
            .cloned()
            .ok_or_else(|| GatewayError::NoUpstream(package.to_owned()))
    }

    /// The channel serving a method.
    pub fn for_method(&self, method: &MethodDescriptor) -> Result<Upstream, GatewayError> {
        self.for_package(method.parent_service().package_name())
    }

    /// Every configured package and channel.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Upstream)> {
        self.channels.iter()
    }
}

/// Builds the outgoing metadata from the incoming headers, the client address and
/// the current span. A client's `traceparent` is forwarded only when this process
/// traces nothing itself; otherwise the gateway's span (its child) replaces it.
pub fn forwarded_metadata(headers: &HeaderMap, client: Option<ClientIp>) -> MetadataMap {
    let mut forwarded = HeaderMap::new();
    for name in FORWARDED_HEADERS {
        // Metadata values are visible ASCII; anything else is dropped, not mangled.
        if let Some(value) = headers.get(*name)
            && MetadataValue::<Ascii>::try_from(value.as_bytes()).is_ok()
        {
            forwarded.insert(*name, value.clone());
        }
    }
    agora_kit::trace_context::inject(&tracing::Span::current(), &mut forwarded);
    let mut metadata = MetadataMap::from_headers(forwarded);
    if let Some(ClientIp(ip)) = client
        && let Ok(value) = MetadataValue::try_from(ip.to_string())
    {
        metadata.insert(REAL_IP, value);
    }
    metadata
}

fn request(message: DynamicMessage, metadata: MetadataMap) -> tonic::Request<DynamicMessage> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata;
    request
}

fn path_of(method: &MethodDescriptor) -> Result<PathAndQuery, GatewayError> {
    PathAndQuery::try_from(grpc_path(method)).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// Calls a unary RPC and returns its answer encoded. `timeout` becomes the
/// `grpc-timeout` the service sees.
pub async fn call_unary(
    channel: Upstream,
    method: &MethodDescriptor,
    message: DynamicMessage,
    metadata: MetadataMap,
    timeout: Duration,
) -> Result<bytes::Bytes, GatewayError> {
    let mut request = request(message, metadata);
    request.set_timeout(timeout);
    let started = std::time::Instant::now();
    let mut grpc = agora_kit::message_limits!(tonic::client::Grpc::new(channel));
    grpc.ready().await.map_err(unavailable)?;
    grpc.unary(request, path_of(method)?, RawCodec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| {
            // tonic servers answer an expired `grpc-timeout` with CANCELLED; once our
            // deadline has passed, that is a deadline, not a client going away.
            if status.code() == tonic::Code::Cancelled && started.elapsed() >= timeout {
                GatewayError::Timeout
            } else {
                GatewayError::Upstream(status)
            }
        })
}

/// Opens a server-streaming RPC. No deadline: streams live as long as the client.
pub async fn call_server_streaming(
    channel: Upstream,
    method: &MethodDescriptor,
    message: DynamicMessage,
    metadata: MetadataMap,
) -> Result<Streaming<DynamicMessage>, GatewayError> {
    let request = request(message, metadata);
    let mut grpc = agora_kit::message_limits!(tonic::client::Grpc::new(channel));
    grpc.ready().await.map_err(unavailable)?;
    grpc.server_streaming(
        request,
        path_of(method)?,
        DynamicCodec::new(method.output()),
    )
    .await
    .map(tonic::Response::into_inner)
    .map_err(GatewayError::Upstream)
}

fn unavailable(error: UpstreamError) -> GatewayError {
    GatewayError::Upstream(tonic::Status::unavailable(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_headers_are_forwarded_and_the_real_ip_is_ours() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Token abc".parse().unwrap());
        headers.insert("cookie", "session=1".parse().unwrap());
        headers.insert("x-real-ip", "6.6.6.6".parse().unwrap());
        headers.insert("x-request-id", "r-1".parse().unwrap());
        let metadata = forwarded_metadata(&headers, Some(ClientIp([10, 0, 0, 7].into())));
        assert_eq!(metadata.get("authorization").unwrap(), "Token abc");
        assert_eq!(metadata.get("x-request-id").unwrap(), "r-1");
        assert_eq!(metadata.get("x-real-ip").unwrap(), "10.0.0.7");
        assert!(metadata.get("cookie").is_none());

        let metadata = forwarded_metadata(&headers, None);
        assert!(metadata.get("x-real-ip").is_none());
    }
}
