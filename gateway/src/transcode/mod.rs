//! JSON <-> protobuf for the REST surface: building request messages from body,
//! query and path ([`request`], [`fields`]) and rendering responses — unary
//! answers straight from their bytes ([`wire`]), stream messages and the
//! well-known types from decoded messages ([`response`]).
//! No I/O here; the REST handler in `rest.rs` drives it.

pub mod fields;
pub mod request;
pub mod response;
pub mod wire;

pub use request::{RequestError, build_message};
pub use response::render_message;
