//! What the post service consumes: `user.deleted`, so a deleted account's
//! articles, comments and favorites go with it.

use std::sync::Arc;

use agora_kit::events::bus::BoxFuture;
use agora_kit::events::{self, Consumer, Envelope, HandleError, Handler, RetryPolicy, types};
use agora_proto::events::v1 as ev;

use crate::store::Store;

/// The post service's queue name on the bus.
pub const CONSUMER: &str = "post";

/// The event types it binds.
pub fn bindings() -> Vec<&'static str> {
    vec![types::USER_DELETED]
}

/// Applies user events to the post store.
pub struct EventHandler {
    store: Store,
}

impl EventHandler {
    pub fn new(store: Store) -> Self {
        Self { store }
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
            if envelope.r#type != types::USER_DELETED {
                return Ok(());
            }
            let deleted: ev::UserDeleted = events::payload(envelope)?;
            self.store
                .forget_account(CONSUMER, &envelope.id, &deleted.user_id)
                .await
                .map_err(|e| HandleError::Retry(e.into()))?;
            Ok(())
        })
    }
}
