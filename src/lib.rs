//! The `agora` binary's library: composing targets into a running process.
//!
//! `serve --target all` runs every service and the gateway in one process (the
//! embedded default); any other target runs one piece, as each Kubernetes
//! Deployment does. The composition is the same either way: services reach each
//! other through gRPC channels, on loopback when they share the process.

pub mod app;
pub mod cli;
pub mod dlq;
pub mod seed;

pub use app::{CONSUMERS, ConsumerSpec, RunningApp, Target, start};
