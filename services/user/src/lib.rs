//! agora-user
