//! Hot reads served from memory: an article by slug, the tag list, and which
//! articles a viewer has favorited. Every write on this replica updates or
//! invalidates what it changed before it answers, so a client never reads its own
//! write stale here; other replicas converge on the bus's live events (within
//! milliseconds), and the TTL bounds staleness should an event be lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Totals of the kept list scopes (`ArticleFilter::kept_scope`).
    counts: Cache<String, i64>,
    /// (viewer, article id) → favorited.
    pub favorited: PairFacts,
    /// Moves on every invalidation. A load records it before reading the database
    /// and keeps what it read only if it has not moved since, so a load that raced
    /// a write never caches what the write replaced.
    epoch: Arc<AtomicU64>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            articles: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TTL)
                .build(),
            tags: Cache::builder().max_capacity(1).time_to_live(TTL).build(),
            counts: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(TTL)
                .build(),
            favorited: Versioned::new(50_000, FACT_TTL),
            epoch: Arc::default(),
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

    /// Where invalidations stand; take it before loading what is to be cached.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Keeps `value` under `key` unless an invalidation came after `loaded_at`.
    /// The check follows the insert, so an invalidation racing the insert either
    /// removes the entry itself or is seen here.
    async fn keep<K, V>(&self, cache: &Cache<K, V>, key: K, value: V, loaded_at: u64)
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        cache.insert(key.clone(), value).await;
        if self.epoch() != loaded_at {
            cache.invalidate(&key).await;
        }
    }

    pub async fn put_article(&self, article: Arc<ArticleRow>, loaded_at: u64) {
        let slug = article.slug.clone();
        self.keep(&self.articles, slug, article, loaded_at).await;
    }

    /// Forgets an article under its slug; and the tag list and the totals, which
    /// it may change.
    pub async fn forget_article(&self, slug: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.articles.invalidate(slug).await;
        self.tags.invalidate(&()).await;
        self.counts.invalidate_all();
    }

    pub async fn count(&self, scope: &str) -> Option<i64> {
        self.counts.get(scope).await
    }

    pub async fn put_count(&self, scope: String, n: i64, loaded_at: u64) {
        self.keep(&self.counts, scope, n, loaded_at).await;
    }

    pub async fn tags(&self) -> Option<Arc<Vec<String>>> {
        self.tags.get(&()).await
    }

    pub async fn put_tags(&self, tags: Arc<Vec<String>>, loaded_at: u64) {
        self.keep(&self.tags, (), tags, loaded_at).await;
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

/// Facts about (subject, id) pairs: whom a viewer follows, what they favorited.
pub type PairFacts = Versioned<(String, String), bool>;

impl PairFacts {
    /// Which of `ids` the fact holds for with `subject`: known pairs from memory,
    /// the rest from one `load` of all of them, remembered for next time.
    pub async fn among<E, Fut>(
        &self,
        subject: &str,
        ids: &[&str],
        load: impl FnOnce(Vec<String>) -> Fut,
    ) -> Result<HashSet<String>, E>
    where
        Fut: std::future::Future<Output = Result<HashSet<String>, E>>,
    {
        let mut holds = HashSet::new();
        let mut unknown = Vec::new();
        for id in ids {
            match self.get(&(subject.to_owned(), (*id).to_owned())).await {
                Some(true) => {
                    holds.insert((*id).to_owned());
                }
                Some(false) => {}
                None => unknown.push((*id).to_owned()),
            }
        }
        if !unknown.is_empty() {
            let found = load(unknown.clone()).await?;
            for id in unknown {
                let is = found.contains(&id);
                self.fill((subject.to_owned(), id.clone()), is).await;
                if is {
                    holds.insert(id);
                }
            }
        }
        Ok(holds)
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
