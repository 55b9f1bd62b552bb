//! Live notifications on this replica: one broadcast channel per subscribed user,
//! fed by [`run_live_fanout`] from the bus's live stream. Every replica hears every
//! `notification.created`, so a user's `Subscribe` gets their notifications
//! whichever replica stored them. A channel disappears with its last subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agora_kit::events::{self, Envelope, types};
use agora_proto::events::v1::NotificationCreated;
use agora_proto::notification::v1::Notification;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How many notifications a slow subscriber may fall behind before it misses some.
const USER_CAPACITY: usize = 64;

/// The per-user channels of this replica; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    users: Arc<Mutex<HashMap<String, broadcast::Sender<Notification>>>>,
}

impl Hub {
    /// Starts receiving `user_id`'s new notifications.
    pub fn subscribe(&self, user_id: &str) -> broadcast::Receiver<Notification> {
        let mut users = self.users.lock().expect("hub lock");
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| broadcast::channel(USER_CAPACITY).0)
            .subscribe()
    }

    /// Hands a notification to `user_id`'s subscribers here, if any; forgets users
    /// nobody listens for any more.
    pub fn deliver(&self, user_id: &str, notification: Notification) {
        let mut users = self.users.lock().expect("hub lock");
        if let Some(channel) = users.get(user_id)
            && channel.send(notification).is_err()
        {
            users.remove(user_id);
        }
    }

    /// How many users have a subscriber here.
    pub fn subscribed_users(&self) -> usize {
        self.users.lock().expect("hub lock").len()
    }
}

/// Reads the bus's live events until `shutdown` (or until the bus goes away) and
/// delivers each `notification.created` to the hub. Other event types and
/// undecodable payloads are skipped: a live stream is best effort, and the feed
/// (and `Last-Event-ID` replay) is the record.
pub async fn run_live_fanout(
    hub: Hub,
    mut rx: broadcast::Receiver<Arc<Envelope>>,
    shutdown: CancellationToken,
) {
    loop {
        let envelope = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = rx.recv() => match received {
                Ok(envelope) => envelope,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "live fan-out fell behind; subscribers miss some notifications");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if envelope.r#type != types::NOTIFICATION_CREATED {
            continue;
        }
        match events::payload::<NotificationCreated>(&envelope) {
            Ok(NotificationCreated {
                user_id,
                notification: Some(notification),
            }) => hub.deliver(&user_id, notification),
            Ok(_) => {
                tracing::warn!(event = %envelope.id, "notification.created without a notification")
            }
            Err(err) => tracing::warn!(event = %envelope.id, %err, "skipping a live event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(user_id: &str, id: &str) -> Arc<Envelope> {
        Arc::new(events::envelope(
            types::NOTIFICATION_CREATED,
            "notification",
            &NotificationCreated {
                user_id: user_id.into(),
                notification: Some(Notification {
                    id: id.into(),
                    ..Default::default()
                }),
            },
        ))
    }

    #[tokio::test]
    async fn each_user_receives_only_their_own_notifications() {
        let hub = Hub::default();
        let mut alice = hub.subscribe("alice");
        let mut bob = hub.subscribe("bob");
        let (tx, rx) = broadcast::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_live_fanout(hub.clone(), rx, shutdown.clone()));

        tx.send(created("alice", "n1")).unwrap();

        assert_eq!(alice.recv().await.unwrap().id, "n1");
        assert!(bob.try_recv().is_err());
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn other_event_types_are_ignored() {
        let hub = Hub::default();
        let mut alice = hub.subscribe("alice");
        let (tx, rx) = broadcast::channel(8);
        let task = tokio::spawn(run_live_fanout(hub, rx, CancellationToken::new()));

        tx.send(Arc::new(events::envelope(
            types::USER_FOLLOWED,
            "user",
            &agora_proto::events::v1::UserFollowed::default(),
        )))
        .unwrap();
        tx.send(created("alice", "n2")).unwrap();

        assert_eq!(alice.recv().await.unwrap().id, "n2");
        drop(tx);
        task.await.unwrap();
    }

    #[test]
    fn a_user_without_subscribers_is_forgotten() {
        let hub = Hub::default();
        drop(hub.subscribe("alice"));
        hub.deliver("alice", Notification::default());
        assert_eq!(hub.subscribed_users(), 0);
    }
}
