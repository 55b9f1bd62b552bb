//! Channels to the other services. A service with no `AGORA_<SERVICE>_GRPC_URL`
//! is reached on this process's own gRPC address: in `serve --target all` the
//! services still call each other over real gRPC on loopback.
//!
//! Wrap a channel in [`TracedChannel`] before handing it to a generated client, so
//! each call carries the current trace (`traceparent`) to the next service.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::config::{Config, ServiceName};
use crate::trace_context::InjectContext;

/// A channel whose calls carry the caller's trace context. Generated clients take
/// it where they take a `Channel`: `UserInternalServiceClient::new(TracedChannel::new(channel))`.
pub type TracedChannel = InjectContext<Channel>;

/// One lazily-connected channel per service.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub user: Channel,
    pub auth: Channel,
    pub post: Channel,
    pub notification: Channel,
}

impl Upstreams {
    /// Channels for `config`, where `local` is the gRPC address this process serves.
    pub fn new(config: &Config, local: SocketAddr) -> anyhow::Result<Self> {
        let channel = |service: ServiceName| -> anyhow::Result<Channel> {
            let url = config
                .grpc_urls
                .get(&service)
                .cloned()
                .unwrap_or_else(|| format!("http://{}", loopback(local)));
            Ok(Endpoint::from_shared(url)?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .connect_lazy())
        };
        Ok(Self {
            user: channel(ServiceName::User)?,
            auth: channel(ServiceName::Auth)?,
            post: channel(ServiceName::Post)?,
            notification: channel(ServiceName::Notification)?,
        })
    }

    /// The channel to `service`, propagating trace context.
    pub fn traced(&self, service: ServiceName) -> TracedChannel {
        TracedChannel::new(self.get(service).clone())
    }

    pub fn get(&self, service: ServiceName) -> &Channel {
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
