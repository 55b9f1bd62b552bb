//! What the post service consumes: the user events that keep its projection of
//! profiles and follows (`authors`), and `user.deleted`, so a deleted account's
//! articles, comments and favorites go with it.

use std::sync::Arc;

use agora_kit::events::bus::BoxFuture;
use agora_kit::events::{self, Consumer, Envelope, HandleError, Handler, RetryPolicy, types};
use agora_proto::events::v1 as ev;

use crate::authors::{Authors, ProfileChange};
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
            let applied = match envelope.r#type.as_str() {
                types::USER_REGISTERED => {
                    let e: ev::UserRegistered = events::payload(envelope)?;
                    let change = ProfileChange {
                        user_id: &e.user_id,
                        username: &e.username,
                        bio: None,
                        image: None,
                        deleted: false,
                    };
                    self.authors.apply_profile(&change, version).await
                }
                types::USER_UPDATED => {
                    let e: ev::UserUpdated = events::payload(envelope)?;
                    let change = ProfileChange {
                        user_id: &e.user_id,
                        username: &e.username,
                        bio: e.bio.as_deref(),
                        image: e.image.as_deref(),
                        deleted: false,
                    };
                    self.authors.apply_profile(&change, version).await
                }
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
                types::USER_DELETED => {
                    let e: ev::UserDeleted = events::payload(envelope)?;
                    let change = ProfileChange {
                        user_id: &e.user_id,
                        username: &e.username,
                        bio: None,
                        image: None,
                        deleted: true,
                    };
                    match self.authors.apply_profile(&change, version).await {
                        Ok(()) => self
                            .store
                            .forget_account(CONSUMER, &envelope.id, &e.user_id)
                            .await
                            .map(drop),
                        Err(err) => Err(err),
                    }
                }
                _ => Ok(()),
            };
            applied.map_err(|e| HandleError::Retry(e.into()))
        })
    }

    /// Projection writes keep the newest version whatever the order, so only one
    /// account's deletion must not run beside its other events: events are keyed
    /// by the account they are about.
    fn order_key(&self, envelope: &Envelope) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let account = match envelope.r#type.as_str() {
            types::USER_FOLLOWED => events::payload::<ev::UserFollowed>(envelope)
                .map(|e| e.follower_id)
                .ok(),
            types::USER_UNFOLLOWED => events::payload::<ev::UserUnfollowed>(envelope)
                .map(|e| e.follower_id)
                .ok(),
            types::USER_REGISTERED => events::payload::<ev::UserRegistered>(envelope)
                .map(|e| e.user_id)
                .ok(),
            types::USER_UPDATED => events::payload::<ev::UserUpdated>(envelope)
                .map(|e| e.user_id)
                .ok(),
            types::USER_DELETED => events::payload::<ev::UserDeleted>(envelope)
                .map(|e| e.user_id)
                .ok(),
            _ => None,
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        account.hash(&mut hasher);
        hasher.finish()
    }
}
