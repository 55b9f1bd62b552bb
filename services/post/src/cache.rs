//! Hot reads served from memory: an article by slug, the tag list, and which
//! articles a viewer has favorited. Every write on this replica updates or
//! invalidates what it changed before it answers, so a client never reads its own
//! write stale here; other replicas converge on the bus's live events (within
//! milliseconds), and the TTL bounds staleness should an event be lost.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::Op;

use crate::store::ArticleRow;

/// How long another replica's write may take to show.
const TTL: Duration = Duration::from_secs(30);

/// How long a per-viewer fact is kept without news from the bus.
pub const FACT_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct ReadCache {
    articles: Cache<String, Arc<ArticleRow>>,
    tags: Cache<(), Arc<Vec<String>>>,
    /// (viewer, article id) → favorited.
    pub favorited: Versioned<(String, String), bool>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            articles: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TTL)
                .build(),
            tags: Cache::builder().max_capacity(1).time_to_live(TTL).build(),
            favorited: Versioned::new(50_000, FACT_TTL),
        }
    }
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("articles", &self.articles.entry_count())
            .finish()
    }
}

impl ReadCache {
    pub async fn article(&self, slug: &str) -> Option<Arc<ArticleRow>> {
        self.articles.get(slug).await
    }

    pub async fn put_article(&self, article: Arc<ArticleRow>) {
        self.articles.insert(article.slug.clone(), article).await;
    }

    /// Forgets an article under its slug; and the tag list, which it may change.
    pub async fn forget_article(&self, slug: &str) {
        self.articles.invalidate(slug).await;
        self.tags.invalidate(&()).await;
    }

    pub async fn tags(&self) -> Option<Arc<Vec<String>>> {
        self.tags.get(&()).await
    }

    pub async fn put_tags(&self, tags: Arc<Vec<String>>) {
        self.tags.insert((), tags).await;
    }
}

/// Facts this replica learns from two sources that race: loads from the database
/// and events that carry the fact itself. Each value keeps the version (event id)
/// that wrote it. An event replaces a value only with a newer version; a load only
/// fills an empty slot, with version `''`, so a load that read the database just
/// before an event arrived can never overwrite what the event said.
#[derive(Clone)]
pub struct Versioned<K, V> {
    entries: Cache<K, (V, Arc<str>)>,
}

impl<K, V> Versioned<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `capacity` entries, each kept for `ttl`: the bound on staleness if
    /// an event never arrives (a broker outage).
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub async fn get(&self, key: &K) -> Option<V> {
        self.entries.get(key).await.map(|(value, _)| value)
    }

    /// What a load read, unless something is already known.
    pub async fn fill(&self, key: K, value: V) {
        self.entries
            .entry(key)
            .or_insert((value, Arc::from("")))
            .await;
    }

    /// What an event (or the write that caused it) says, as of `version`.
    pub async fn learn(&self, key: K, value: V, version: &str) {
        let version: Arc<str> = Arc::from(version);
        self.entries
            .entry(key)
            .and_compute_with(|known| async move {
                match known {
                    Some(entry) if *entry.value().1 >= *version => Op::Nop,
                    _ => Op::Put((value, version)),
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_load_never_overwrites_an_event_and_an_older_event_never_a_newer_one() {
        let facts: Versioned<&str, bool> = Versioned::new(10, Duration::from_secs(60));
        facts.learn("k", true, "v2").await;
        facts.fill("k", false).await;
        facts.learn("k", false, "v1").await;
        assert_eq!(facts.get(&"k").await, Some(true));

        facts.learn("k", false, "v3").await;
        facts.learn("k", false, "v3").await;
        assert_eq!(facts.get(&"k").await, Some(false));

        facts.fill("other", true).await;
        facts.learn("other", false, "v1").await;
        assert_eq!(facts.get(&"other").await, Some(false));
    }
}
