//! How a service reaches the others. An [`Upstream`] is anything that answers
//! gRPC requests: a lazily-connected tonic channel to another process, or — for a
//! service running in this same process — that service's own server stack,
//! called directly ([`LocalServices`], ADR 8). Both carry the same
//! `http::Request`s with the same protobuf bodies, metadata and trailers; the
//! local one skips HTTP/2 framing and the loopback socket.
//!
//! Wrap an upstream in [`TracedChannel`] before handing it to a generated client,
//! so each call carries the current trace (`traceparent`) to the next service.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use crate::config::{Config, ServiceName};
use crate::trace_context::InjectContext;

/// An upstream's transport failing (a refused connection, a reset stream). A
/// concrete type rather than a boxed trait object, so futures holding calls stay
/// provably `Send`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UpstreamError(#[from] tonic::transport::Error);

/// A gRPC service to call: a channel to another process or a local service stack.
pub type Upstream = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    UpstreamError,
>;

/// An upstream whose calls carry the caller's trace context. Generated clients
/// take it: `UserInternalServiceClient::new(TracedChannel::new(upstream))`.
pub type TracedChannel = InjectContext<Upstream>;

/// A tonic channel as an [`Upstream`].
pub fn remote(channel: Channel) -> Upstream {
    BoxCloneSyncService::new(channel.map_err(UpstreamError::from))
}

/// The services this process serves itself, bound once its gRPC server stack is
/// built. Upstreams handed out before that (services need each other to be
/// built) forward to it once bound, and answer UNAVAILABLE until then and after
/// the server has stopped.
///
/// Only a weak reference is kept: the stack holds the services, which hold these
/// upstreams, and a strong one would keep every service (and its database pool)
/// alive after shutdown. The running server owns the stack.
#[derive(Debug, Clone, Default)]
pub struct LocalServices {
    stack: Arc<OnceLock<Weak<Upstream>>>,
}

impl LocalServices {
    /// Makes `stack` answer every upstream handed out by [`Self::upstream`], for
    /// as long as its owner keeps it.
    pub fn bind(&self, stack: &Arc<Upstream>) {
        if self.stack.set(Arc::downgrade(stack)).is_err() {
            tracing::warn!("local services were bound twice; keeping the first stack");
        }
    }

    /// An upstream that calls the bound stack in this process.
    pub fn upstream(&self) -> Upstream {
        let stack = self.stack.clone();
        BoxCloneSyncService::new(tower::service_fn(
            move |request: http::Request<tonic::body::Body>| {
                let bound = stack.get().and_then(Weak::upgrade);
                async move {
                    match bound {
                        Some(stack) => Upstream::clone(&stack).oneshot(request).await,
                        None => Ok(tonic::Status::unavailable("service not serving").into_http()),
                    }
                }
            },
        ))
    }
}

/// One upstream per service.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub user: Upstream,
    pub auth: Upstream,
    pub post: Upstream,
    pub notification: Upstream,
}

impl Upstreams {
    /// Upstreams for `config`: a service with an `AGORA_<SERVICE>_GRPC_URL` is
    /// called there; one that `local` serves is called in this process; any other
    /// on this process's own gRPC address `listen`.
    pub fn new(
        config: &Config,
        listen: SocketAddr,
        local: Option<(&LocalServices, &dyn Fn(ServiceName) -> bool)>,
    ) -> anyhow::Result<Self> {
        let upstream = |service: ServiceName| -> anyhow::Result<Upstream> {
            let url = match config.grpc_urls.get(&service) {
                Some(url) => url.clone(),
                None => match local {
                    Some((local, runs)) if runs(service) => return Ok(local.upstream()),
                    _ => format!("http://{}", loopback(listen)),
                },
            };
            Ok(remote(
                Endpoint::from_shared(url)?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .connect_lazy(),
            ))
        };
        Ok(Self {
            user: upstream(ServiceName::User)?,
            auth: upstream(ServiceName::Auth)?,
            post: upstream(ServiceName::Post)?,
            notification: upstream(ServiceName::Notification)?,
        })
    }

    /// The upstream of `service`, propagating trace context.
    pub fn traced(&self, service: ServiceName) -> TracedChannel {
        TracedChannel::new(self.get(service).clone())
    }

    pub fn get(&self, service: ServiceName) -> &Upstream {
        match service {
            ServiceName::User => &self.user,
            ServiceName::Auth => &self.auth,
            ServiceName::Post => &self.post,
            ServiceName::Notification => &self.notification,
        }
    }
}

/// A wildcard bind address is not something to connect to; use loopback instead.
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}
