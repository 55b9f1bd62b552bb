//! What the post service consumes: the user events that keep its projection of
//! profiles and follows (`authors`), and `user.deleted`, so a deleted account's
//! articles, comments and favorites go with it.

use std::sync::Arc;

use agora_kit::events::bus::BoxFuture;
use agora_kit::events::{self, Consumer, Envelope, HandleError, Handler, RetryPolicy, types};
use agora_proto::events::v1 as ev;

use crate::authors::{Authors, ProfileEvent};
use crate::store::Store;

/// The post service's queue name on the bus.
pub const CONSUMER: &str = "post";

/// The event types it binds.
pub fn bindings() -> Vec<&'static str> {
    vec![
        types::USER_REGISTERED,
        types::USER_UPDATED,
        types::USER_DELETED,
        types::USER_FOLLOWED,
        types::USER_UNFOLLOWED,
    ]
}

/// Applies user events to the post store and the profile projection.
pub struct EventHandler {
    store: Store,
    authors: Authors,
}

impl EventHandler {
    pub fn new(store: Store, authors: Authors) -> Self {
        Self { store, authors }
    }

    /// The bus consumer: this handler on the post database.
    pub fn consumer(self: Arc<Self>, db: agora_kit::db::Db) -> Consumer {
        Consumer {
            name: CONSUMER,
            bindings: bindings(),
            handler: self,
            db,
            retry: RetryPolicy::default(),
        }
    }
}

impl Handler for EventHandler {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            // Projection writes are ordered by the event id, so a redelivered or
            // overtaken event changes nothing and needs no inbox claim.
            let version = envelope.id.as_str();
            if let Some(profile) = ProfileEvent::of(envelope)? {
                let applied = self.authors.apply_profile(&profile.change(), version).await;
                let applied = match applied {
                    Ok(()) if profile.is_deletion() => self
                        .store
                        .forget_account(CONSUMER, &envelope.id, profile.user_id())
                        .await
                        .map(drop),
                    other => other,
                };
                return applied.map_err(|e| HandleError::Retry(e.into()));
            }
            let applied = match envelope.r#type.as_str() {
                types::USER_FOLLOWED => {
                    let e: ev::UserFollowed = events::payload(envelope)?;
                    self.authors
                        .apply_follow(&e.follower_id, &e.followee_id, true, version)
                        .await
                }
                types::USER_UNFOLLOWED => {
                    let e: ev::UserUnfollowed = events::payload(envelope)?;
                    self.authors
                        .apply_follow(&e.follower_id, &e.followee_id, false, version)
                        .await
                }
                _ => Ok(()),
            };
            applied.map_err(|e| HandleError::Retry(e.into()))
        })
    }

    /// Events are keyed by the account they are about, so one account's events
    /// (its deletion last) stay in order; the projection's versions make any
    /// order between accounts safe.
    fn order_key(&self, envelope: &Envelope) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let account = match envelope.r#type.as_str() {
            types::USER_FOLLOWED => events::payload::<ev::UserFollowed>(envelope)
                .map(|e| e.follower_id)
                .ok(),
            types::USER_UNFOLLOWED => events::payload::<ev::UserUnfollowed>(envelope)
                .map(|e| e.follower_id)
                .ok(),
            _ => ProfileEvent::of(envelope)
                .ok()
                .flatten()
                .map(|p| p.user_id().to_owned()),
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        account.hash(&mut hasher);
        hasher.finish()
    }
}
