//! `agora.notification.v1.NotificationService` handlers: authenticate, parse the
//! request into domain types, call the store, render. Every RPC is about the
//! caller's own notifications, so each requires a token.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;

use agora_kit::status::{self, FieldViolation};
use agora_kit::token::TokenVerifier;
use agora_proto::notification::v1 as pb;
use futures::{Stream, StreamExt};
use pb::notification_service_server::NotificationService;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::domain::Preferences;
use crate::live::Hub;
use crate::store::Store;

/// The metadata a reconnecting stream sends (SSE's `Last-Event-ID`, forwarded by
/// the gateway): the id of the last notification it saw.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// Notifications replayed at most on reconnect; older misses are in the feed.
const REPLAY_LIMIT: i64 = 500;

/// Ids accepted in one MarkNotificationsRead.
const MAX_IDS: usize = 1000;

type NotificationStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

/// `agora.notification.v1.NotificationService`.
#[derive(Clone)]
pub struct NotificationApi {
    store: Store,
    verifier: TokenVerifier,
    hub: Hub,
    /// Ends live streams on shutdown, so draining does not wait on them forever.
    shutdown: CancellationToken,
}

impl NotificationApi {
    pub fn new(
        store: Store,
        verifier: TokenVerifier,
        hub: Hub,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            verifier,
            hub,
            shutdown,
        }
    }
}

/// Notification ids are UUIDs; anything else cannot name one.
fn is_notification_id(raw: &str) -> bool {
    uuid::Uuid::try_parse(raw).is_ok()
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    #[tracing::instrument(skip_all)]
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let req = request.into_inner();
        let (limit, offset) = status::page(req.limit, req.offset)?;
        let (rows, unread) = self
            .store
            .page(&caller.user_id, limit, offset)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.iter().map(|r| r.to_proto()).collect(),
            unread_count: i32::try_from(unread).unwrap_or(i32::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn mark_notifications_read(
        &self,
        request: Request<pb::MarkNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkNotificationsReadResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let ids = request.into_inner().ids;
        if ids.len() > MAX_IDS {
            return Err(status::invalid(vec![FieldViolation::new(
                "ids",
                format!("must list at most {MAX_IDS} notifications"),
            )]));
        }
        if ids.iter().any(|id| !is_notification_id(id)) {
            return Err(status::invalid(vec![FieldViolation::new(
                "ids",
                "must be notification ids",
            )]));
        }
        self.store
            .mark_read(&caller.user_id, &ids)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::MarkNotificationsReadResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::GetPreferencesResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let prefs = self
            .store
            .preferences(&caller.user_id)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::GetPreferencesResponse {
            preferences: Some(prefs.to_proto()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> Result<Response<pb::UpdatePreferencesResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let prefs =
            Preferences::try_from(request.into_inner().preferences).map_err(status::invalid)?;
        self.store
            .replace_preferences(&caller.user_id, &prefs)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::UpdatePreferencesResponse {
            preferences: Some(prefs.to_proto()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<NotificationStream>, Status> {
        let caller = self.verifier.require(&request).await?;
        // Listen before reading the replay, so nothing created in between is lost;
        // what both would yield is dropped from the live side below.
        let live = self.hub.subscribe(&caller.user_id);
        let last_seen = request
            .metadata()
            .get(LAST_EVENT_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|id| is_notification_id(id))
            .map(str::to_owned);
        let replay = match &last_seen {
            Some(after) => self
                .store
                .after(&caller.user_id, after, REPLAY_LIMIT)
                .await
                .map_err(status::db)?,
            None => Vec::new(),
        };
        let replayed_up_to = replay.last().map(|r| r.id.clone());
        let mut recent = Recent::new(replay.iter().map(|r| r.id.clone()));
        let replay = futures::stream::iter(replay.into_iter().map(|row| {
            Ok(pb::SubscribeResponse {
                notification: Some(row.to_proto()),
            })
        }));
        let live = BroadcastStream::new(live).filter_map(move |received| {
            // A subscriber too slow to keep up skips what it missed rather than
            // dying; the feed still has it. The bus delivers at least once, and the
            // replay may already have sent what arrives live: each id goes out once.
            let fresh = received.ok().filter(|n| {
                replayed_up_to
                    .as_deref()
                    .is_none_or(|up_to| n.id.as_str() > up_to)
                    && recent.first_time(&n.id)
            });
            futures::future::ready(fresh.map(|notification| {
                Ok(pb::SubscribeResponse {
                    notification: Some(notification),
                })
            }))
        });
        let stream = replay
            .chain(live)
            .take_until(self.shutdown.clone().cancelled_owned());
        let stream = self
            .verifier
            .revocations()
            .end_on_revoke(caller.session_id, Box::pin(stream));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The ids a stream sent lately, to drop redeliveries.
struct Recent {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl Recent {
    /// Redeliveries come soon after the original; this many ids cover them.
    const CAPACITY: usize = 256;

    fn new(ids: impl IntoIterator<Item = String>) -> Self {
        let mut recent = Self {
            order: VecDeque::new(),
            seen: HashSet::new(),
        };
        for id in ids {
            recent.first_time(&id);
        }
        recent
    }

    /// True the first time `id` is offered.
    fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.seen.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_pass_once_and_old_ones_are_forgotten() {
        let mut recent = Recent::new(["a".to_owned()]);
        assert!(!recent.first_time("a"));
        assert!(recent.first_time("b"));
        assert!(!recent.first_time("b"));
        for i in 0..Recent::CAPACITY {
            recent.first_time(&i.to_string());
        }
        assert!(recent.first_time("a"));
    }
}
