//! The post service. Its contract (`agora.post.v1.PostService`) is registered,
//! reflected and routed by the gateway; RPCs not built yet answer UNIMPLEMENTED
//! through the generated default methods.

use agora_proto::post::v1::post_service_server::PostService;

/// `agora.post.v1.PostService`.
#[derive(Debug, Clone, Default)]
pub struct PostApi;

#[tonic::async_trait]
impl PostService for PostApi {}
