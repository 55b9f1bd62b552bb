//! What every agora service shares: configuration, telemetry, database pools and
//! migrations, the mapping from domain errors to `tonic::Status`, the access-token
//! verifier, and the gRPC server builder (health, reflection, graceful shutdown).
//!
//! Nothing here knows about users, articles or notifications.

pub mod config;
pub mod db;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod token;
pub mod upstream;

pub use config::{Config, ServiceName};
