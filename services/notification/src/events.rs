//! The consumer of `user.*` and `post.*` events: keeps the account and follower
//! projections, and turns what happened into notifications, email jobs and
//! `notification.created` events.
//!
//! Each event is one transaction: the inbox claim, the effect, and the outbox rows
//! it causes commit together, so a redelivered event changes nothing and a live
//! event exists exactly when its notification does.

use std::sync::Arc;

use agora_kit::db::{Db, now_micros};
use agora_kit::events::bus::BoxFuture;
use agora_kit::events::{
    self, Consumer, Envelope, HandleError, Handler, RetryPolicy, inbox, outbox, types,
};
use agora_proto::events::v1 as ev;
use sqlx::AnyConnection;
use tokio::sync::Notify;

use crate::domain::{EmailKind, Kind, Schedule};
use crate::store::{self, NewEmail, NewNotification, NotificationRow};

/// The consumer's name: its inbox rows and its queue (`agora.notification`).
pub const CONSUMER: &str = "notification";

/// The `producer` of the events this service emits.
const PRODUCER: &str = "notification";

/// The routing keys the consumer binds.
pub fn bindings() -> Vec<&'static str> {
    vec!["user.*", "post.*"]
}

/// Applies events to the notification database.
#[derive(Clone)]
pub struct EventHandler {
    db: Db,
    /// Wakes the email worker when a transaction queued mail.
    email_wake: Arc<Notify>,
    /// Wakes the outbox relay when a transaction announced notifications, so
    /// live streams hear of them now rather than at the relay's next sweep.
    relay_wake: Arc<Notify>,
}

/// An event decoded, before any database work: undecodable ones are poison.
enum Event {
    Registered(ev::UserRegistered),
    Updated(ev::UserUpdated),
    Deleted(ev::UserDeleted),
    Followed(ev::UserFollowed),
    Unfollowed(ev::UserUnfollowed),
    Published(ev::ArticlePublished),
    Commented(ev::CommentAdded),
    Favorited(ev::ArticleFavorited),
}

impl Event {
    /// The account that acted: the one registered, the follower, the author, the
    /// commenter, the one who favorited. Handling needs that account known, and
    /// its `user.registered` has the same actor, so keeping each actor's events in
    /// order means the registration is always handled first; so are a follow and
    /// its unfollow. A popular author's many new followers are different actors.
    fn actor(&self) -> &str {
        match self {
            Event::Registered(e) => &e.user_id,
            Event::Updated(e) => &e.user_id,
            Event::Deleted(e) => &e.user_id,
            Event::Followed(e) => &e.follower_id,
            Event::Unfollowed(e) => &e.follower_id,
            Event::Published(e) => &e.author_id,
            Event::Commented(e) => &e.author_id,
            Event::Favorited(e) => &e.user_id,
        }
    }
}

/// Why applying an event failed inside its transaction.
#[derive(Debug, thiserror::Error)]
enum EffectError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The actor's `user.registered` has not been applied yet (events from
    /// different producers may overtake each other): worth another delivery.
    #[error("actor {0} is not in the account projection yet")]
    UnknownActor(String),
}

impl EventHandler {
    pub fn new(db: Db, email_wake: Arc<Notify>, relay_wake: Arc<Notify>) -> Self {
        Self {
            db,
            email_wake,
            relay_wake,
        }
    }

    /// The bus consumer for this handler, with the default retry policy.
    pub fn consumer(self: &Arc<Self>) -> Consumer {
        Consumer {
            name: CONSUMER,
            bindings: bindings(),
            handler: self.clone(),
            db: self.db.clone(),
            retry: RetryPolicy::default(),
        }
    }

    /// Applies one event at most once.
    #[tracing::instrument(skip_all, fields(event = %envelope.id, event_type = %envelope.r#type), err)]
    pub async fn apply(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let Some(event) = decode(envelope)? else {
            return Ok(());
        };
        let retry = |err: EffectError| HandleError::Retry(err.into());
        let mut tx = self.db.pool().begin().await.map_err(|e| retry(e.into()))?;
        if !inbox::claim(&mut tx, CONSUMER, &envelope.id)
            .await
            .map_err(|e| retry(e.into()))?
        {
            tracing::debug!("already handled");
            return Ok(());
        }
        let mut effect = Effect {
            conn: &mut tx,
            db: &self.db,
            now: now_micros(),
            emails: 0,
            announced: 0,
        };
        effect.apply(event).await.map_err(retry)?;
        let (emails, announced) = (effect.emails, effect.announced);
        tx.commit().await.map_err(|e| retry(e.into()))?;
        if emails > 0 {
            self.email_wake.notify_one();
        }
        if announced > 0 {
            self.relay_wake.notify_one();
        }
        Ok(())
    }
}

impl Handler for EventHandler {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(self.apply(envelope))
    }

    /// One actor's events stay in order ([`Event::actor`]); different actors'
    /// events are handled side by side.
    fn order_key(&self, envelope: &Envelope) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        match decode(envelope) {
            Ok(Some(event)) => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                event.actor().hash(&mut hasher);
                hasher.finish()
            }
            _ => 0,
        }
    }
}

/// The event in `envelope`, `None` for types this service does not act on.
fn decode(envelope: &Envelope) -> Result<Option<Event>, HandleError> {
    fn required(envelope: &Envelope, fields: &[(&str, &str)]) -> Result<(), HandleError> {
        match fields.iter().find(|(_, value)| value.is_empty()) {
            Some((name, _)) => Err(HandleError::Poison(format!(
                "{} ({}) has no {name}",
                envelope.id, envelope.r#type
            ))),
            None => Ok(()),
        }
    }
    let event = match envelope.r#type.as_str() {
        types::USER_REGISTERED => {
            let e: ev::UserRegistered = events::payload(envelope)?;
            required(envelope, &[("user_id", &e.user_id)])?;
            Event::Registered(e)
        }
        types::USER_UPDATED => {
            let e: ev::UserUpdated = events::payload(envelope)?;
            required(envelope, &[("user_id", &e.user_id)])?;
            Event::Updated(e)
        }
        types::USER_DELETED => {
            let e: ev::UserDeleted = events::payload(envelope)?;
            required(envelope, &[("user_id", &e.user_id)])?;
            Event::Deleted(e)
        }
        types::USER_FOLLOWED => {
            let e: ev::UserFollowed = events::payload(envelope)?;
            required(
                envelope,
                &[
                    ("follower_id", &e.follower_id),
                    ("followee_id", &e.followee_id),
                ],
            )?;
            Event::Followed(e)
        }
        types::USER_UNFOLLOWED => {
            let e: ev::UserUnfollowed = events::payload(envelope)?;
            Event::Unfollowed(e)
        }
        types::ARTICLE_PUBLISHED => {
            let e: ev::ArticlePublished = events::payload(envelope)?;
            required(envelope, &[("author_id", &e.author_id)])?;
            Event::Published(e)
        }
        types::COMMENT_ADDED => {
            let e: ev::CommentAdded = events::payload(envelope)?;
            required(
                envelope,
                &[
                    ("author_id", &e.author_id),
                    ("article_author_id", &e.article_author_id),
                ],
            )?;
            Event::Commented(e)
        }
        types::ARTICLE_FAVORITED => {
            let e: ev::ArticleFavorited = events::payload(envelope)?;
            required(
                envelope,
                &[
                    ("user_id", &e.user_id),
                    ("article_author_id", &e.article_author_id),
                ],
            )?;
            Event::Favorited(e)
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}

/// One event's work inside its transaction.
struct Effect<'c> {
    conn: &'c mut AnyConnection,
    db: &'c Db,
    now: i64,
    /// Emails queued, so the worker is woken after commit.
    emails: usize,
    /// Outbox rows written, so the relay is woken after commit.
    announced: usize,
}

impl Effect<'_> {
    async fn apply(&mut self, event: Event) -> Result<(), EffectError> {
        match event {
            Event::Registered(e) => {
                store::upsert_account(self.conn, &e.user_id, &e.username, &e.email).await?;
                let subject = format!("Welcome to agora, {}", e.username);
                let body = format!(
                    "Hello {},\n\nyour agora account is ready. Follow people to hear when \
                     they publish, and choose what reaches you by email in your \
                     notification settings.\n",
                    e.username
                );
                self.email(&e.user_id, EmailKind::Welcome, &subject, &body, self.now)
                    .await?;
            }
            Event::Updated(e) => {
                store::upsert_account(self.conn, &e.user_id, &e.username, &e.email).await?;
            }
            Event::Deleted(e) => store::delete_user(self.conn, &e.user_id).await?,
            Event::Followed(e) => {
                store::add_follower(self.conn, &e.followee_id, &e.follower_id).await?;
                self.notify(&e.followee_id, Kind::Followed, &e.follower_id, "", "")
                    .await?;
            }
            Event::Unfollowed(e) => {
                store::remove_follower(self.conn, &e.followee_id, &e.follower_id).await?;
            }
            Event::Published(e) => self.fan_out(&e).await?,
            Event::Commented(e) => {
                self.notify(
                    &e.article_author_id,
                    Kind::Commented,
                    &e.author_id,
                    &e.slug,
                    &e.title,
                )
                .await?;
            }
            Event::Favorited(e) => {
                self.notify(
                    &e.article_author_id,
                    Kind::Favorited,
                    &e.user_id,
                    &e.slug,
                    &e.title,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn actor(&mut self, actor_id: &str) -> Result<String, EffectError> {
        store::username(self.conn, actor_id)
            .await?
            .ok_or_else(|| EffectError::UnknownActor(actor_id.to_owned()))
    }

    /// Tells one recipient, through the channels they chose; never about their
    /// own action.
    async fn notify(
        &mut self,
        recipient: &str,
        kind: Kind,
        actor_id: &str,
        slug: &str,
        title: &str,
    ) -> Result<(), EffectError> {
        if recipient == actor_id {
            return Ok(());
        }
        let channels = store::channels(self.conn, recipient, kind).await?;
        if !channels.in_app && !channels.email {
            return Ok(());
        }
        let actor = self.actor(actor_id).await?;
        let text = kind.text(&actor, title);
        if channels.in_app {
            let new = NewNotification {
                kind,
                actor_id,
                actor_username: &actor,
                article_slug: slug,
                text: &text,
                created_at: self.now,
            };
            let row = store::insert_notification(self.conn, recipient, &new).await?;
            self.announce(&row).await?;
        }
        if channels.email {
            let schedule = store::schedule(self.conn, recipient).await?;
            self.notification_email(recipient, &schedule, &text).await?;
        }
        Ok(())
    }

    /// A new article: every follower of its author, in one statement for the feed.
    async fn fan_out(&mut self, e: &ev::ArticlePublished) -> Result<(), EffectError> {
        let actor = self.actor(&e.author_id).await?;
        let text = Kind::ArticlePublished.text(&actor, &e.title);
        let new = NewNotification {
            kind: Kind::ArticlePublished,
            actor_id: &e.author_id,
            actor_username: &actor,
            article_slug: &e.slug,
            text: &text,
            created_at: self.now,
        };
        let rows = store::fan_out_to_followers(self.conn, self.db.backend(), &new).await?;
        let envelopes: Vec<_> = rows.iter().map(created_event).collect();
        outbox::enqueue_many(self.conn, &envelopes).await?;
        self.announced += envelopes.len();
        for (follower, schedule) in
            store::email_followers(self.conn, &e.author_id, Kind::ArticlePublished).await?
        {
            self.notification_email(&follower, &schedule, &text).await?;
        }
        tracing::debug!(
            notified = rows.len(),
            author = %e.author_id,
            "article fan-out"
        );
        Ok(())
    }

    /// `notification.created` in the outbox, for every replica's live streams.
    async fn announce(&mut self, row: &NotificationRow) -> Result<(), EffectError> {
        outbox::enqueue(self.conn, &created_event(row)).await?;
        self.announced += 1;
        Ok(())
    }

    /// The email twin of a notification, held back until quiet hours end.
    async fn notification_email(
        &mut self,
        recipient: &str,
        schedule: &Schedule,
        text: &str,
    ) -> Result<(), EffectError> {
        let now =
            jiff::Timestamp::from_microsecond(self.now).unwrap_or_else(|_| jiff::Timestamp::now());
        let at = schedule.deliverable_at(now).as_microsecond();
        let body = format!(
            "{text}\n\nYou receive this because you asked for it by email; change that in \
             your notification settings.\n"
        );
        self.email(recipient, EmailKind::Notification, text, &body, at)
            .await
    }

    async fn email(
        &mut self,
        user_id: &str,
        kind: EmailKind,
        subject: &str,
        body: &str,
        not_before: i64,
    ) -> Result<(), EffectError> {
        store::insert_email(
            self.conn,
            &NewEmail {
                user_id,
                kind,
                subject,
                body,
                not_before,
            },
        )
        .await?;
        self.emails += 1;
        Ok(())
    }
}

/// `notification.created` for a stored notification: every replica's live
/// streams forward it to the recipient.
fn created_event(row: &NotificationRow) -> events::Envelope {
    events::envelope(
        types::NOTIFICATION_CREATED,
        PRODUCER,
        &ev::NotificationCreated {
            user_id: row.user_id.clone(),
            notification: Some(row.to_proto()),
        },
    )
}
