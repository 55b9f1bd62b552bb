//! Live comment rooms: one broadcast channel per watched article. Adding or
//! deleting a comment publishes to the room; every `WatchComments` stream on this
//! replica receives it. A room disappears with its last watcher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agora_proto::post::v1::WatchCommentsResponse;
use tokio::sync::broadcast;

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

    /// Tells everyone in the room; forgets rooms nobody watches any more.
    pub fn publish(&self, article_id: &str, change: WatchCommentsResponse) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        if let Some(room) = rooms.get(article_id) {
            if room.send(change).is_err() {
                rooms.remove(article_id);
            }
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
