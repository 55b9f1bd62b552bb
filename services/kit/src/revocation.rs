//! What every token verifier refuses or corrects after a token was signed: the
//! sessions that ended and the roles that changed (ADR 11).
//!
//! An access token is checked without calling anyone, so without this a token
//! would outlive its session by up to its whole lifetime. Each replica keeps the
//! revocations of the last access-token lifetime in memory: live events
//! (`auth.sessions_revoked`, `user.role_changed`) reach every replica within
//! milliseconds, and a snapshot from the auth service (`ListRevocations`) fills
//! what a replica missed — at start, after falling behind the live feed, and
//! every half minute in case the broker dropped a replica's live queue.
//!
//! Until its first snapshot has loaded, a replica does not know what was revoked
//! before it started, so it verifies no token ([`Revocations::loaded`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use agora_proto::auth::v1 as auth_pb;
use agora_proto::events::v1 as ev;
use futures::Stream;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::db::micros_of;
use crate::events::{self, Envelope, types};
use crate::token::Role;

/// How often the snapshot is loaded again when all is well.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a failed snapshot load is tried again, at first and at most.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The revocations one replica knows; cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    inner: Arc<State>,
}

struct State {
    /// Revoked session id → when to forget it (microseconds since the epoch).
    sessions: RwLock<HashMap<String, i64>>,
    /// Account id → its current role, since when, and when to forget it.
    roles: RwLock<HashMap<String, RoleChange>>,
    /// Bumped on every new revocation, for open streams to look again.
    changed: watch::Sender<u64>,
    /// How long an entry matters: the longest an access token lives, plus leeway.
    keep_micros: i64,
    /// Whether a snapshot has been applied; `loaded_tx` wakes those waiting for it.
    loaded: AtomicBool,
    loaded_tx: watch::Sender<bool>,
}

#[derive(Debug, Clone, Copy)]
struct RoleChange {
    role: Role,
    changed_at: i64,
    forget_at: i64,
}

impl Revocations {
    /// How long a revocation matters when access tokens live `access_ttl`: past
    /// it, every token it concerns has expired.
    pub fn window(access_ttl: Duration) -> Duration {
        access_ttl + crate::token::LEEWAY
    }

    /// Remembers each revocation for `keep` (see [`Self::window`]).
    pub fn new(keep: Duration) -> Self {
        Self {
            inner: Arc::new(State {
                sessions: RwLock::new(HashMap::new()),
                roles: RwLock::new(HashMap::new()),
                changed: watch::channel(0).0,
                keep_micros: i64::try_from(keep.as_micros()).unwrap_or(i64::MAX),
                loaded: AtomicBool::new(false),
                loaded_tx: watch::channel(false).0,
            }),
        }
    }

    /// Waits until the first snapshot has loaded, at most `patience`; whether it has.
    pub async fn loaded(&self, patience: Duration) -> bool {
        if self.inner.loaded.load(Ordering::Acquire) {
            return true;
        }
        let mut loaded = self.inner.loaded_tx.subscribe();
        tokio::time::timeout(patience, loaded.wait_for(|done| *done))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Whether the session has ended.
    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.inner
            .sessions
            .read()
            .expect("revocations lock")
            .contains_key(session_id)
    }

    /// The account's role if it changed lately, which overrides a token's claim.
    pub fn current_role(&self, user_id: &str) -> Option<Role> {
        self.inner
            .roles
            .read()
            .expect("revocations lock")
            .get(user_id)
            .map(|change| change.role)
    }

    /// Records ended sessions (`revoked_at` in microseconds since the epoch).
    pub fn revoke_sessions<'a>(&self, ids: impl IntoIterator<Item = &'a str>, revoked_at: i64) {
        let forget_at = revoked_at.saturating_add(self.inner.keep_micros);
        let mut added = false;
        {
            let mut sessions = self.inner.sessions.write().expect("revocations lock");
            for id in ids {
                added |= sessions.insert(id.to_owned(), forget_at).is_none();
            }
        }
        if added {
            self.inner.changed.send_modify(|n| *n += 1);
        }
    }

    /// Records a role change; an older change than the one known is ignored.
    pub fn role_changed(&self, user_id: &str, role: Role, changed_at: i64) {
        let mut roles = self.inner.roles.write().expect("revocations lock");
        let newer = roles
            .get(user_id)
            .is_none_or(|known| known.changed_at <= changed_at);
        if newer {
            roles.insert(
                user_id.to_owned(),
                RoleChange {
                    role,
                    changed_at,
                    forget_at: changed_at.saturating_add(self.inner.keep_micros),
                },
            );
        }
    }

    /// Applies a live event; other types are ignored.
    pub fn apply(&self, envelope: &Envelope) {
        let at = envelope
            .occurred_at
            .as_ref()
            .map_or_else(crate::db::now_micros, micros_of);
        match envelope.r#type.as_str() {
            types::SESSIONS_REVOKED => {
                if let Ok(revoked) = events::payload::<ev::SessionsRevoked>(envelope) {
                    tracing::info!(
                        user_id = %revoked.user_id,
                        sessions = revoked.session_ids.len(),
                        reason = %revoked.reason,
                        "sessions revoked"
                    );
                    self.revoke_sessions(revoked.session_ids.iter().map(String::as_str), at);
                }
            }
            types::USER_ROLE_CHANGED => {
                if let Ok(changed) = events::payload::<ev::UserRoleChanged>(envelope)
                    && let Some(role) = Role::from_pb(changed.role)
                {
                    self.role_changed(&changed.user_id, role, at);
                }
            }
            _ => {}
        }
    }

    /// Adds what the auth service knows; nothing known is dropped.
    pub fn apply_snapshot(&self, snapshot: &auth_pb::ListRevocationsResponse) {
        for session in &snapshot.sessions {
            let at = session
                .revoked_at
                .as_ref()
                .map_or_else(crate::db::now_micros, micros_of);
            self.revoke_sessions([session.id.as_str()], at);
        }
        for change in &snapshot.roles {
            if let Some(role) = Role::from_pb(change.role) {
                let at = change.changed_at.as_ref().map_or(0, micros_of);
                self.role_changed(&change.user_id, role, at);
            }
        }
        self.inner.loaded.store(true, Ordering::Release);
        self.inner.loaded_tx.send_replace(true);
    }

    /// Forgets what no unexpired token can concern any more.
    pub fn sweep(&self) {
        let now = crate::db::now_micros();
        self.inner
            .sessions
            .write()
            .expect("revocations lock")
            .retain(|_, forget_at| *forget_at > now);
        self.inner
            .roles
            .write()
            .expect("revocations lock")
            .retain(|_, change| change.forget_at > now);
    }

    /// Resolves once `session_id` is revoked.
    pub async fn ended(&self, session_id: &str) {
        let mut changes = self.inner.changed.subscribe();
        loop {
            if self.is_revoked(session_id) {
                return;
            }
            if changes.changed().await.is_err() {
                // The list is gone with its process: nothing will end this session.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Passes `stream` on until the session is revoked, then ends it with
    /// UNAUTHENTICATED, so a client learns why its live stream stopped.
    pub fn end_on_revoke<S, T>(&self, session_id: String, stream: S) -> EndOnRevoke<S>
    where
        S: Stream<Item = Result<T, Status>> + Unpin,
    {
        let revocations = self.clone();
        EndOnRevoke {
            inner: Some(stream),
            revoked: Box::pin(async move { revocations.ended(&session_id).await }),
        }
    }
}

/// A stream that ends with UNAUTHENTICATED when its session is revoked.
pub struct EndOnRevoke<S> {
    inner: Option<S>,
    revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S, T> Stream for EndOnRevoke<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.revoked.as_mut().poll(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Err(Status::unauthenticated(
                "the session has ended: sign in again",
            ))));
        }
        let next = Pin::new(inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            this.inner = None;
        }
        next
    }
}

/// Keeps `revocations` current until `shutdown`: live events as they come, the
/// auth service's snapshot at start, after a gap in the live feed and every
/// [`RESYNC`].
pub async fn follow(
    revocations: Revocations,
    mut live: broadcast::Receiver<Arc<Envelope>>,
    auth: crate::upstream::Upstream,
    shutdown: CancellationToken,
) {
    let mut next_load = tokio::time::Instant::now();
    let mut retry = FIRST_RETRY;
    let mut live_open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next_load) => {
                next_load = tokio::time::Instant::now()
                    + match load(&revocations, &auth).await {
                        Ok(()) => {
                            retry = FIRST_RETRY;
                            RESYNC
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, ?retry, "loading revocations failed; retrying");
                            retry = (retry * 2).min(MAX_RETRY);
                            retry / 2
                        }
                    };
                revocations.sweep();
            }
            received = live.recv(), if live_open => match received {
                Ok(envelope) => revocations.apply(&envelope),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "live feed overran: reloading revocations");
                    next_load = tokio::time::Instant::now();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // No live feed any more: the snapshot alone keeps the list.
                    live_open = false;
                }
            },
        }
    }
}

async fn load(revocations: &Revocations, auth: &crate::upstream::Upstream) -> Result<(), Status> {
    use auth_pb::auth_internal_service_client::AuthInternalServiceClient;
    let snapshot = crate::message_limits!(AuthInternalServiceClient::new(
        crate::upstream::TracedChannel::new(auth.clone())
    ))
    .list_revocations(auth_pb::ListRevocationsRequest {})
    .await?
    .into_inner();
    revocations.apply_snapshot(&snapshot);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn now() -> i64 {
        crate::db::now_micros()
    }

    #[tokio::test]
    async fn nothing_is_loaded_until_a_snapshot_is() {
        let list = Revocations::new(Duration::from_secs(60));
        assert!(!list.loaded(Duration::from_millis(10)).await);

        let waiting = tokio::spawn({
            let list = list.clone();
            async move { list.loaded(Duration::from_secs(5)).await }
        });
        list.apply_snapshot(&auth_pb::ListRevocationsResponse::default());

        assert!(waiting.await.unwrap());
        assert!(list.loaded(Duration::ZERO).await);
    }

    #[test]
    fn a_revoked_session_is_refused_until_its_tokens_have_expired() {
        let list = Revocations::new(Duration::from_secs(60));
        list.revoke_sessions(["s1"], now());
        list.revoke_sessions(["old"], now() - 61_000_000);

        list.sweep();

        assert!(list.is_revoked("s1"));
        assert!(!list.is_revoked("old"));
        assert!(!list.is_revoked("s2"));
    }

    #[test]
    fn the_newest_role_change_wins_whatever_order_they_arrive_in() {
        let list = Revocations::new(Duration::from_secs(60));
        let t = now();
        list.role_changed("u1", Role::Admin, t + 10);
        list.role_changed("u1", Role::User, t);

        assert_eq!(list.current_role("u1"), Some(Role::Admin));
        assert_eq!(list.current_role("u2"), None);
    }

    #[test]
    fn live_events_are_applied() {
        let list = Revocations::new(Duration::from_secs(60));
        list.apply(&events::envelope(
            types::SESSIONS_REVOKED,
            "auth",
            &ev::SessionsRevoked {
                user_id: "u1".into(),
                session_ids: vec!["s1".into(), "s2".into()],
                reason: "logout_all".into(),
            },
        ));
        list.apply(&events::envelope(
            types::USER_ROLE_CHANGED,
            "user",
            &ev::UserRoleChanged {
                user_id: "u1".into(),
                role: agora_proto::user::v1::Role::Moderator as i32,
            },
        ));

        assert!(list.is_revoked("s1") && list.is_revoked("s2"));
        assert_eq!(list.current_role("u1"), Some(Role::Moderator));
    }

    #[tokio::test]
    async fn a_stream_ends_with_unauthenticated_once_its_session_is_revoked() {
        let list = Revocations::new(Duration::from_secs(60));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, Status>>();
        let mut stream = list.end_on_revoke(
            "s1".into(),
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        );
        tx.send(Ok(1)).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);

        list.revoke_sessions(["other"], now());
        tx.send(Ok(2)).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 2);

        list.revoke_sessions(["s1"], now());
        let ended = stream.next().await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Unauthenticated);
        // The stream has let go of its source and stays ended.
        assert!(tx.send(Ok(3)).is_err());
        assert!(stream.next().await.is_none());
    }
}
