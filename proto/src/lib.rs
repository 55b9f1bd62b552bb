//! agora's contract: the code generated from `proto/agora/**` and the encoded
//! descriptor set, which carries the `google.api.http` rules the gateway routes by
//! and which the reflection services publish.

/// Every agora file and its imports, encoded as a `google.protobuf.FileDescriptorSet`,
/// with source info (comments) and extension options kept.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/agora_descriptor.bin"));

/// `agora.user.v1`: identity.
pub mod user {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("agora.user.v1");
    }
}

/// `agora.auth.v1`: the token authority.
pub mod auth {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("agora.auth.v1");
    }
}

/// `agora.post.v1`: articles, comments, tags, favorites.
pub mod post {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("agora.post.v1");
    }
}

/// `agora.notification.v1`: notifications.
pub mod notification {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("agora.notification.v1");
    }
}

/// `agora.events.v1`: domain events on the bus.
pub mod events {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("agora.events.v1");
    }
}
