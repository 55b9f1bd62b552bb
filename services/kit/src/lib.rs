//! What every agora service shares: configuration, telemetry, database pools and
//! migrations, the mapping from domain errors to `tonic::Status`, the access-token
//! verifier, the gRPC server builder (health, reflection, graceful shutdown,
//! per-RPC spans and metrics), trace-context propagation and Prometheus metrics.
//!
//! Nothing here knows about users, articles or notifications.

pub mod config;
pub mod db;
pub mod events;
pub mod metrics;
pub mod net;
pub mod revocation;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod token;
pub mod trace_context;
pub mod upstream;

pub use config::{Config, ServiceName};
