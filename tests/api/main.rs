//! End-to-end tests: a whole agora process per test, driven over REST, gRPC and
//! gRPC-web exactly as clients drive it. Every case runs on the embedded default
//! (SQLite) and, when `AGORA_TEST_DATABASE_URL` is set, on PostgreSQL.

mod admin;
mod articles;
mod dlq;
mod grpc;
mod helpers;
mod identity;
mod live;
mod notifications;
mod revocation;
mod roles;
mod sessions;
mod split;
mod transcoding;
