//! agora-post
