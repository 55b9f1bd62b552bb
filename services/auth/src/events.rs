//! What the auth service consumes: `user.deleted`, which ends every session of
//! the account, and `user.role_changed`, which it remembers so that replicas
//! loading `ListRevocations` learn the role too (ADR 11).

use std::sync::Arc;

use agora_kit::events::bus::BoxFuture;
use agora_kit::events::{self, Consumer, Envelope, HandleError, Handler, RetryPolicy, types};
use agora_kit::token::Role;
use agora_proto::events::v1 as ev;

use crate::store::Store;

/// The auth service's queue name on the bus.
pub const CONSUMER: &str = "auth";

/// The event types it binds.
pub fn bindings() -> Vec<&'static str> {
    vec![types::USER_DELETED, types::USER_ROLE_CHANGED]
}

/// Applies account events to sessions and role changes.
pub struct EventHandler {
    store: Store,
}

impl EventHandler {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn consumer(self: Arc<Self>) -> Consumer {
        Consumer {
            name: CONSUMER,
            bindings: bindings(),
            db: self.store.db().clone(),
            handler: self,
            retry: RetryPolicy::default(),
        }
    }
}

impl Handler for EventHandler {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let applied = match envelope.r#type.as_str() {
                types::USER_DELETED => {
                    let e: ev::UserDeleted = events::payload(envelope)?;
                    self.store
                        .forget_account(CONSUMER, &envelope.id, &e.user_id)
                        .await
                }
                types::USER_ROLE_CHANGED => {
                    let e: ev::UserRoleChanged = events::payload(envelope)?;
                    let role = Role::from_pb(e.role).ok_or_else(|| {
                        HandleError::Poison(format!("{}: no such role {}", envelope.id, e.role))
                    })?;
                    let at = envelope
                        .occurred_at
                        .as_ref()
                        .map(agora_kit::db::micros_of)
                        .ok_or_else(|| {
                            HandleError::Poison(format!("{} has no time", envelope.id))
                        })?;
                    // Newer-wins by time, so a redelivery needs no inbox claim.
                    self.store.record_role_change(&e.user_id, role, at).await
                }
                _ => Ok(()),
            };
            applied.map_err(|e| HandleError::Retry(e.into()))
        })
    }
}
