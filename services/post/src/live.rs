//! Live comment rooms: one broadcast channel per watched article on this replica.
//! Rooms are fed from the bus's live fan-out (`post.comment_added`,
//! `post.comment_deleted`), not from the handler that made the change, so a
//! watcher on any replica sees every change. A room disappears with its last
//! watcher. The same feed drops cached articles that another replica changed,
//! and keeps every replica's memory of profiles, follows and favorites current.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agora_kit::events::{self, Envelope, types};
use agora_proto::events::v1 as ev;
use agora_proto::post::v1::watch_comments_response::Change;
use agora_proto::post::v1::{Comment, WatchCommentsResponse};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::authors::{Authors, ProfileEvent};
use crate::cache::ReadCache;

/// How many changes a slow watcher may fall behind before it misses some.
const ROOM_CAPACITY: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct Rooms {
    rooms: Arc<Mutex<HashMap<String, broadcast::Sender<WatchCommentsResponse>>>>,
}

impl Rooms {
    /// Joins the room of `article_id`.
    pub fn watch(&self, article_id: &str) -> broadcast::Receiver<WatchCommentsResponse> {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        rooms
            .entry(article_id.to_owned())
            .or_insert_with(|| broadcast::channel(ROOM_CAPACITY).0)
            .subscribe()
    }

    /// Whether anyone on this replica watches `article_id`.
    pub fn is_watched(&self, article_id: &str) -> bool {
        self.rooms
            .lock()
            .expect("rooms lock")
            .contains_key(article_id)
    }

    /// Tells everyone in the room; forgets rooms nobody watches any more.
    pub fn publish(&self, article_id: &str, change: WatchCommentsResponse) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        if let Some(room) = rooms.get(article_id)
            && room.send(change).is_err()
        {
            rooms.remove(article_id);
        }
    }
}

/// Feeds the rooms, and drops cached articles other replicas changed, from the
/// bus until shutdown.
pub async fn run_fanout(
    rooms: Rooms,
    cache: ReadCache,
    authors: Authors,
    mut live: broadcast::Receiver<Arc<Envelope>>,
    shutdown: CancellationToken,
) {
    loop {
        let envelope = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = live.recv() => match next {
                Ok(envelope) => envelope,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "live comment fan-out fell behind");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        match envelope.r#type.as_str() {
            types::COMMENT_ADDED => {
                let Ok(added) = events::payload::<ev::CommentAdded>(&envelope) else {
                    continue;
                };
                if !rooms.is_watched(&added.article_id) {
                    continue;
                }
                // `following` is each watcher's own view; the room shares one copy.
                let author = match authors.profiles([added.author_id.as_str()], None).await {
                    Ok(mut found) => found.remove(&added.author_id),
                    Err(_) => None,
                };
                let comment = Comment {
                    id: added.comment_id,
                    created_at: added.created_at,
                    updated_at: added.created_at,
                    body: added.body,
                    author,
                };
                rooms.publish(
                    &added.article_id,
                    WatchCommentsResponse {
                        change: Some(Change::Added(comment)),
                    },
                );
            }
            types::COMMENT_DELETED => {
                if let Ok(deleted) = events::payload::<ev::CommentDeleted>(&envelope) {
                    rooms.publish(
                        &deleted.article_id,
                        WatchCommentsResponse {
                            change: Some(Change::DeletedId(deleted.comment_id)),
                        },
                    );
                }
            }
            types::ARTICLE_UPDATED => {
                if let Ok(updated) = events::payload::<ev::ArticleUpdated>(&envelope) {
                    cache.forget_article(&updated.slug).await;
                    if !updated.previous_slug.is_empty() {
                        cache.forget_article(&updated.previous_slug).await;
                    }
                }
            }
            types::ARTICLE_PUBLISHED => {
                if let Ok(published) = events::payload::<ev::ArticlePublished>(&envelope) {
                    cache.forget_article(&published.slug).await;
                }
            }
            types::ARTICLE_DELETED => {
                if let Ok(deleted) = events::payload::<ev::ArticleDeleted>(&envelope) {
                    cache.forget_article(&deleted.slug).await;
                }
            }
            types::ARTICLE_FAVORITED => {
                if let Ok(favorited) = events::payload::<ev::ArticleFavorited>(&envelope) {
                    cache.forget_article(&favorited.slug).await;
                    let key = (favorited.user_id, favorited.article_id);
                    cache.favorited.learn(key, true, &envelope.id).await;
                }
            }
            types::ARTICLE_UNFAVORITED => {
                if let Ok(unfavorited) = events::payload::<ev::ArticleUnfavorited>(&envelope) {
                    cache.forget_article(&unfavorited.slug).await;
                    let key = (unfavorited.user_id, unfavorited.article_id);
                    cache.favorited.learn(key, false, &envelope.id).await;
                }
            }
            // Profiles and follows: every replica's memory learns them from the
            // events themselves, which carry the whole fact.
            types::USER_UPDATED | types::USER_DELETED => {
                if let Ok(Some(profile)) = ProfileEvent::of(&envelope) {
                    authors.learn_profile(&profile.change(), &envelope.id).await;
                }
            }
            types::USER_FOLLOWED => {
                if let Ok(e) = events::payload::<ev::UserFollowed>(&envelope) {
                    authors
                        .learn_follow(&e.follower_id, &e.followee_id, true, &envelope.id)
                        .await;
                }
            }
            types::USER_UNFOLLOWED => {
                if let Ok(e) = events::payload::<ev::UserUnfollowed>(&envelope) {
                    authors
                        .learn_follow(&e.follower_id, &e.followee_id, false, &envelope.id)
                        .await;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::post::v1::watch_comments_response::Change;

    #[tokio::test]
    async fn watchers_of_an_article_receive_its_changes_only() {
        let rooms = Rooms::default();
        let mut a = rooms.watch("a");
        let mut b = rooms.watch("b");

        rooms.publish(
            "a",
            WatchCommentsResponse {
                change: Some(Change::DeletedId(7)),
            },
        );

        assert_eq!(a.recv().await.unwrap().change, Some(Change::DeletedId(7)));
        assert!(b.try_recv().is_err());
    }

    #[test]
    fn a_room_without_watchers_is_forgotten() {
        let rooms = Rooms::default();
        drop(rooms.watch("a"));
        rooms.publish("a", WatchCommentsResponse::default());
        assert!(rooms.rooms.lock().unwrap().is_empty());
    }
}
