//! The notification service. Its contract (`agora.notification.v1.NotificationService`) is registered,
//! reflected and routed by the gateway; RPCs not built yet answer UNIMPLEMENTED
//! through the generated default methods.

use agora_proto::notification::v1::notification_service_server::NotificationService;

/// `agora.notification.v1.NotificationService`.
#[derive(Debug, Clone, Default)]
pub struct NotificationApi;

#[tonic::async_trait]
impl NotificationService for NotificationApi {}
