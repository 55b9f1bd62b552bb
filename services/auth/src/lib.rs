//! agora-auth
