//! agora-notification
