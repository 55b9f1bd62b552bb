//! Hot reads — an article by slug, the tag list — served from memory for a short
//! while. Every write on this replica invalidates what it changed before it
//! answers, so a client never reads its own write stale here; other replicas
//! converge within the TTL (and on invalidation events once the bus carries them).

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::store::ArticleRow;

/// How long another replica's write may take to show.
const TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct ReadCache {
    articles: Cache<String, Arc<ArticleRow>>,
    tags: Cache<(), Arc<Vec<String>>>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            articles: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TTL)
                .build(),
            tags: Cache::builder().max_capacity(1).time_to_live(TTL).build(),
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
