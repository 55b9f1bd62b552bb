//! agora-kit
