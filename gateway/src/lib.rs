//! agora-gateway
