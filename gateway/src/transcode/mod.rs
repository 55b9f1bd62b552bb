//! JSON <-> protobuf for the REST surface: building request messages from body,
//! query and path ([`request`], [`fields`]) and rendering responses ([`response`]).
//! No I/O here; the REST handler in `rest.rs` drives it.

pub mod fields;
pub mod request;
pub mod response;

pub use request::{RequestError, build_message};
pub use response::render_message;
