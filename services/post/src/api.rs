//! `agora.post.v1.PostService` handlers: decode, authorize, call the store, render
//! with authors fetched once per page.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use agora_kit::status::{self, FieldViolation};
use agora_kit::token::{Principal, TokenVerifier};
use agora_proto::post::v1 as pb;
use futures::{Stream, StreamExt};
use pb::post_service_server::PostService;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::authors::Authors;
use crate::cache::ReadCache;
use crate::domain;
use crate::live::Rooms;
use crate::store::{
    ArticleChanges, ArticleFilter, ArticleRow, CommentRow, IdempotencyKey, NewArticle, Store,
    StoreError, Written,
};

/// `agora.post.v1.PostService`.
#[derive(Clone)]
pub struct PostApi {
    store: Store,
    authors: Authors,
    verifier: TokenVerifier,
    cache: ReadCache,
    rooms: Rooms,
    /// Ends live streams on shutdown, so draining does not wait on them forever.
    shutdown: CancellationToken,
}

impl PostApi {
    /// The service, with its live rooms fed from the bus's `live` fan-out.
    pub fn new(
        store: Store,
        authors: Authors,
        verifier: TokenVerifier,
        live: tokio::sync::broadcast::Receiver<Arc<agora_kit::events::Envelope>>,
        shutdown: CancellationToken,
    ) -> Self {
        let rooms = Rooms::default();
        let cache = ReadCache::default();
        tokio::spawn(crate::live::run_fanout(
            rooms.clone(),
            cache.clone(),
            authors.clone(),
            live,
            shutdown.clone(),
        ));
        Self {
            store,
            authors,
            verifier,
            cache,
            rooms,
            shutdown,
        }
    }

    /// An article by slug as `viewer` may see it: drafts of others are NOT_FOUND.
    async fn visible(
        &self,
        slug: &str,
        viewer: Option<&Principal>,
    ) -> Result<Arc<ArticleRow>, Status> {
        let article = match self.cache.article(slug).await {
            Some(article) => article,
            None => {
                let loaded_at = self.cache.epoch();
                let found = self
                    .store
                    .article_by_slug(slug)
                    .await
                    .map_err(status::db)?
                    .ok_or_else(not_found_article)?;
                let found = Arc::new(found);
                self.cache.put_article(found.clone(), loaded_at).await;
                found
            }
        };
        if !domain::may_see(viewer, article.published, article.ownership()) {
            return Err(not_found_article());
        }
        Ok(article)
    }

    /// Renders articles for `viewer` with one profile call and one favorites query.
    async fn render(
        &self,
        articles: &[impl AsRef<ArticleRow>],
        viewer: Option<&Principal>,
    ) -> Result<Vec<pb::Article>, Status> {
        let viewer_id = viewer.map(|v| v.user_id.as_str());
        let authors = self
            .authors
            .profiles(
                articles.iter().map(|a| a.as_ref().author_id.as_str()),
                viewer_id,
            )
            .await?;
        let favorited = match viewer_id {
            Some(id) => {
                let ids: Vec<&str> = articles.iter().map(|a| a.as_ref().id.as_str()).collect();
                self.favorited_among(id, &ids).await?
            }
            None => HashSet::new(),
        };
        Ok(articles
            .iter()
            .map(|a| {
                let a = a.as_ref();
                to_article(
                    a,
                    authors.get(&a.author_id).cloned(),
                    favorited.contains(&a.id),
                )
            })
            .collect())
    }

    /// Which of `ids` `viewer` has favorited: from memory, the rest in one query.
    async fn favorited_among(&self, viewer: &str, ids: &[&str]) -> Result<HashSet<String>, Status> {
        self.cache
            .favorited
            .among(viewer, ids, |unknown| async move {
                self.store.favorited_among(viewer, &unknown).await
            })
            .await
            .map_err(status::db)
    }

    /// Records the caller's own favorite change on this replica before answering,
    /// versioned after the event the write emitted, so that event arriving late
    /// from the bus cannot undo a later change.
    async fn learn_favorite(&self, viewer: &str, article_id: &str, favorited: bool) {
        let version = uuid::Uuid::now_v7().to_string();
        self.cache
            .favorited
            .learn(
                (viewer.to_owned(), article_id.to_owned()),
                favorited,
                &version,
            )
            .await;
    }

    async fn render_one(
        &self,
        article: &ArticleRow,
        viewer: Option<&Principal>,
    ) -> Result<pb::Article, Status> {
        Ok(self
            .render(&[article], viewer)
            .await?
            .pop()
            .expect("one article in, one out"))
    }

    async fn render_comments(
        &self,
        comments: &[CommentRow],
        viewer: Option<&Principal>,
    ) -> Result<Vec<pb::Comment>, Status> {
        let authors = self
            .authors
            .profiles(
                comments.iter().map(|c| c.author_id.as_str()),
                viewer.map(|v| v.user_id.as_str()),
            )
            .await?;
        Ok(comments
            .iter()
            .map(|c| to_comment(c, authors.get(&c.author_id).cloned()))
            .collect())
    }

    async fn list(
        &self,
        filter: ArticleFilter,
        limit: i32,
        offset: i32,
        viewer: Option<&Principal>,
    ) -> Result<(Vec<pb::Article>, i32), Status> {
        let (limit, offset) = status::page(limit, offset)?;
        let rows = self
            .store
            .list_articles(&filter, limit, offset)
            .await
            .map_err(status::db)?;
        let scope = filter.kept_scope();
        let total = match &scope {
            Some(scope) => self.cache.count(scope).await,
            None => None,
        };
        let total = match total {
            Some(total) => total,
            None => {
                let loaded_at = self.cache.epoch();
                let total = self
                    .store
                    .count_articles(&filter)
                    .await
                    .map_err(status::db)?;
                if let Some(scope) = scope {
                    self.cache.put_count(scope, total, loaded_at).await;
                }
                total
            }
        };
        let articles = self
            .render(&rows.into_iter().map(Arc::new).collect::<Vec<_>>(), viewer)
            .await?;
        Ok((articles, i32::try_from(total).unwrap_or(i32::MAX)))
    }
}

fn not_found_article() -> Status {
    Status::not_found("no such article")
}

fn to_article(a: &ArticleRow, author: Option<pb::Author>, favorited: bool) -> pb::Article {
    pb::Article {
        slug: a.slug.clone(),
        title: a.title.clone(),
        description: a.description.clone(),
        body: a.body.clone(),
        tag_list: a.tags.clone(),
        created_at: Some(agora_kit::db::timestamp(a.created_at)),
        updated_at: Some(agora_kit::db::timestamp(a.updated_at)),
        favorited,
        favorites_count: i32::try_from(a.favorites_count).unwrap_or(i32::MAX),
        author,
        published: a.published,
    }
}

fn to_comment(c: &CommentRow, author: Option<pb::Author>) -> pb::Comment {
    pb::Comment {
        id: c.id,
        created_at: Some(agora_kit::db::timestamp(c.created_at)),
        updated_at: Some(agora_kit::db::timestamp(c.updated_at)),
        body: c.body.clone(),
        author,
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::SlugTaken => status::taken("title"),
            StoreError::Db(err) => status::db(err),
        }
    }
}

/// The `Idempotency-Key` of a write, bound to the caller and the request's content.
fn idempotency_key<T: Message>(
    request: &Request<T>,
    caller: &Principal,
    method: &'static str,
) -> Result<Option<IdempotencyKey>, Status> {
    let Some(value) = request.metadata().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            status::invalid(vec![FieldViolation::new(
                "Idempotency-Key",
                "must be 1 to 255 visible characters",
            )])
        })?;
    let digest = Sha256::digest(request.get_ref().encode_to_vec());
    Ok(Some(IdempotencyKey {
        user_id: caller.user_id.clone(),
        method,
        key: key.to_owned(),
        request_hash: digest.iter().map(|b| format!("{b:02x}")).collect(),
    }))
}

fn reused_key() -> Status {
    status::invalid(vec![FieldViolation::new(
        "Idempotency-Key",
        "was already used with a different request",
    )])
}

fn invalid_if_any(violations: Vec<FieldViolation>) -> Result<(), Status> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(status::invalid(violations))
    }
}

type CommentStream = Pin<Box<dyn Stream<Item = Result<pb::WatchCommentsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PostService for PostApi {
    #[tracing::instrument(skip_all)]
    async fn list_articles(
        &self,
        request: Request<pb::ListArticlesRequest>,
    ) -> Result<Response<pb::ListArticlesResponse>, Status> {
        let viewer = self.verifier.authenticate(&request).await?;
        let req = request.into_inner();
        let mut filter = ArticleFilter::default();
        if !req.tag.is_empty() {
            filter.tag = Some(req.tag.clone());
        }
        // A filter naming an unknown user matches nothing.
        for (username, slot) in [
            (&req.author, &mut filter.author_id),
            (&req.favorited, &mut filter.favorited_by),
        ] {
            if !username.is_empty() {
                match self.authors.id_of(username).await? {
                    Some(id) => *slot = Some(id),
                    None => {
                        status::page(req.limit, req.offset)?;
                        return Ok(Response::new(pb::ListArticlesResponse::default()));
                    }
                }
            }
        }
        let (articles, articles_count) = self
            .list(filter, req.limit, req.offset, viewer.as_ref())
            .await?;
        Ok(Response::new(pb::ListArticlesResponse {
            articles,
            articles_count,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_feed(
        &self,
        request: Request<pb::GetFeedRequest>,
    ) -> Result<Response<pb::GetFeedResponse>, Status> {
        let viewer = self.verifier.require(&request).await?;
        let req = request.into_inner();
        let followees = self.authors.followees(&viewer.user_id).await?;
        let filter = ArticleFilter {
            authors_in: Some(followees),
            ..ArticleFilter::default()
        };
        let (mut articles, articles_count) = self
            .list(filter, req.limit, req.offset, Some(&viewer))
            .await?;
        // Every author in the feed is followed, even if the profile projection
        // has not heard of a follow made a moment ago.
        for author in articles.iter_mut().filter_map(|a| a.author.as_mut()) {
            author.following = true;
        }
        Ok(Response::new(pb::GetFeedResponse {
            articles,
            articles_count,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_article(
        &self,
        request: Request<pb::GetArticleRequest>,
    ) -> Result<Response<pb::GetArticleResponse>, Status> {
        let viewer = self.verifier.authenticate(&request).await?;
        let article = self
            .visible(&request.get_ref().slug, viewer.as_ref())
            .await?;
        let article = self.render_one(&article, viewer.as_ref()).await?;
        Ok(Response::new(pb::GetArticleResponse {
            article: Some(article),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_article(
        &self,
        request: Request<pb::CreateArticleRequest>,
    ) -> Result<Response<pb::CreateArticleResponse>, Status> {
        let author = self.verifier.require(&request).await?;
        let key = idempotency_key(&request, &author, "CreateArticle")?;
        let new = request.into_inner().article.unwrap_or_default();
        let mut violations = Vec::new();
        let mut check = |r: Result<String, FieldViolation>| r.map_err(|v| violations.push(v)).ok();
        let title = check(domain::title(&new.title));
        let description = check(domain::description(&new.description));
        let body = check(domain::body(&new.body));
        let tags = domain::tags(&new.tag_list)
            .map_err(|v| violations.push(v))
            .ok();
        invalid_if_any(violations)?;
        let (Some(title), Some(description), Some(body), Some(tags)) =
            (title, description, body, tags)
        else {
            unreachable!("no violations means every field parsed");
        };
        let new = NewArticle {
            author_id: author.user_id.clone(),
            title,
            description,
            body,
            tags,
            published: new.published.unwrap_or(true),
        };
        let row = match self.store.create_article(&new, key.as_ref()).await? {
            Written::New(row) => row,
            Written::Replayed(id) => self
                .store
                .article_by_id(&id)
                .await
                .map_err(status::db)?
                .ok_or_else(not_found_article)?,
            Written::Conflict => return Err(reused_key()),
        };
        self.cache.forget_article(&row.slug).await;
        let article = self.render_one(&row, Some(&author)).await?;
        Ok(Response::new(pb::CreateArticleResponse {
            article: Some(article),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_article(
        &self,
        request: Request<pb::UpdateArticleRequest>,
    ) -> Result<Response<pb::UpdateArticleResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let req = request.into_inner();
        let current = self.visible(&req.slug, Some(&caller)).await?;
        if !domain::may_edit_article(&caller, current.ownership()) {
            return Err(Status::permission_denied(
                "only the author may edit this article",
            ));
        }
        let changes = req.article.unwrap_or_default();
        let mut violations = Vec::new();
        let mut check = |r: Result<String, FieldViolation>| r.map_err(|v| violations.push(v)).ok();
        let title = changes
            .title
            .as_deref()
            .and_then(|t| check(domain::title(t)));
        let description = changes
            .description
            .as_deref()
            .and_then(|d| check(domain::description(d)));
        let body = changes.body.as_deref().and_then(|b| check(domain::body(b)));
        if changes.published == Some(false) && current.published {
            violations.push(FieldViolation::new(
                "published",
                "a published article cannot go back to draft",
            ));
        }
        invalid_if_any(violations)?;
        // A new title makes a new slug, as Conduit expects.
        let slug = title
            .as_ref()
            .filter(|t| **t != current.title)
            .map(|t| domain::slug_base(t))
            .filter(|s| *s != current.slug);
        let mut update = ArticleChanges {
            slug: slug.clone(),
            title,
            description,
            body,
            published: changes.published,
        };
        let updated = loop {
            match self
                .store
                .update_article(&current, std::mem::take(&mut update))
                .await
            {
                Err(StoreError::SlugTaken) => {
                    let base = update_slug_base(&slug, &current.slug);
                    update = ArticleChanges {
                        slug: Some(domain::slug_with_suffix(&base)),
                        title: changes.title.clone().map(|t| t.trim().to_owned()),
                        description: changes.description.clone().map(|d| d.trim().to_owned()),
                        body: changes.body.clone().map(|b| b.trim().to_owned()),
                        published: changes.published,
                    };
                }
                other => break other?.ok_or_else(not_found_article)?,
            }
        };
        self.cache.forget_article(&current.slug).await;
        self.cache.forget_article(&updated.slug).await;
        let article = self.render_one(&updated, Some(&caller)).await?;
        Ok(Response::new(pb::UpdateArticleResponse {
            article: Some(article),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_article(
        &self,
        request: Request<pb::DeleteArticleRequest>,
    ) -> Result<Response<pb::DeleteArticleResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let article = self.visible(&request.get_ref().slug, Some(&caller)).await?;
        if !domain::may_delete_article(&caller, article.ownership()) {
            return Err(Status::permission_denied(
                "only the author, a moderator or an administrator may delete this article",
            ));
        }
        self.store
            .delete_article(&article)
            .await
            .map_err(status::db)?;
        self.cache.forget_article(&article.slug).await;
        tracing::info!(article_id = %article.id, by = %caller.user_id, "article deleted");
        Ok(Response::new(pb::DeleteArticleResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn favorite_article(
        &self,
        request: Request<pb::FavoriteArticleRequest>,
    ) -> Result<Response<pb::FavoriteArticleResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let article = self.visible(&request.get_ref().slug, Some(&caller)).await?;
        self.store
            .favorite(&caller.user_id, &article)
            .await
            .map_err(status::db)?;
        self.learn_favorite(&caller.user_id, &article.id, true)
            .await;
        self.cache.forget_article(&article.slug).await;
        let article = self.visible(&article.slug, Some(&caller)).await?;
        let article = self.render_one(&article, Some(&caller)).await?;
        Ok(Response::new(pb::FavoriteArticleResponse {
            article: Some(article),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn unfavorite_article(
        &self,
        request: Request<pb::UnfavoriteArticleRequest>,
    ) -> Result<Response<pb::UnfavoriteArticleResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let article = self.visible(&request.get_ref().slug, Some(&caller)).await?;
        self.store
            .unfavorite(&caller.user_id, &article)
            .await
            .map_err(status::db)?;
        self.learn_favorite(&caller.user_id, &article.id, false)
            .await;
        self.cache.forget_article(&article.slug).await;
        let article = self.visible(&article.slug, Some(&caller)).await?;
        let article = self.render_one(&article, Some(&caller)).await?;
        Ok(Response::new(pb::UnfavoriteArticleResponse {
            article: Some(article),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_comments(
        &self,
        request: Request<pb::ListCommentsRequest>,
    ) -> Result<Response<pb::ListCommentsResponse>, Status> {
        let viewer = self.verifier.authenticate(&request).await?;
        let article = self
            .visible(&request.get_ref().slug, viewer.as_ref())
            .await?;
        let rows = self.store.comments(&article.id).await.map_err(status::db)?;
        let comments = self.render_comments(&rows, viewer.as_ref()).await?;
        Ok(Response::new(pb::ListCommentsResponse { comments }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_comment(
        &self,
        request: Request<pb::AddCommentRequest>,
    ) -> Result<Response<pb::AddCommentResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let key = idempotency_key(&request, &caller, "AddComment")?;
        let req = request.into_inner();
        let body = domain::comment_body(&req.comment.unwrap_or_default().body)
            .map_err(|v| status::invalid(vec![v]))?;
        let article = self.visible(&req.slug, Some(&caller)).await?;
        let row = match self
            .store
            .add_comment(&article, &caller.user_id, &body, key.as_ref())
            .await
            .map_err(status::db)?
        {
            Written::New(row) => row,
            Written::Replayed(id) => {
                let id = id.parse::<i64>().map_err(status::internal)?;
                self.store
                    .comment(id)
                    .await
                    .map_err(status::db)?
                    .ok_or_else(|| Status::not_found("no such comment"))?
            }
            Written::Conflict => return Err(reused_key()),
        };
        let comment = self
            .render_comments(std::slice::from_ref(&row), Some(&caller))
            .await?
            .pop()
            .expect("one comment in, one out");
        Ok(Response::new(pb::AddCommentResponse {
            comment: Some(comment),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_comment(
        &self,
        request: Request<pb::DeleteCommentRequest>,
    ) -> Result<Response<pb::DeleteCommentResponse>, Status> {
        let caller = self.verifier.require(&request).await?;
        let req = request.into_inner();
        let article = self.visible(&req.slug, Some(&caller)).await?;
        let comment = self
            .store
            .comment(req.id)
            .await
            .map_err(status::db)?
            .filter(|c| c.article_id == article.id)
            .ok_or_else(|| Status::not_found("no such comment"))?;
        if !domain::may_delete_comment(&caller, &comment.author_id, article.ownership()) {
            return Err(Status::permission_denied(
                "only the comment's author, the article's author, a moderator or an administrator may delete this comment",
            ));
        }
        self.store
            .delete_comment(comment.id, &article)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::DeleteCommentResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn watch_comments(
        &self,
        request: Request<pb::WatchCommentsRequest>,
    ) -> Result<Response<CommentStream>, Status> {
        let viewer = self.verifier.authenticate(&request).await?;
        let article = self
            .visible(&request.get_ref().slug, viewer.as_ref())
            .await?;
        let changes = BroadcastStream::new(self.rooms.watch(&article.id))
            // A watcher too slow to keep up skips what it missed rather than dying.
            .filter_map(|change| async move { change.ok().map(Ok) })
            .take_until(self.shutdown.clone().cancelled_owned());
        // A signed-in watcher's stream ends with its session.
        let changes: CommentStream = match viewer {
            Some(viewer) => Box::pin(
                self.verifier
                    .revocations()
                    .end_on_revoke(viewer.session_id, Box::pin(changes)),
            ),
            None => Box::pin(changes),
        };
        Ok(Response::new(changes))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tags(
        &self,
        _request: Request<pb::ListTagsRequest>,
    ) -> Result<Response<pb::ListTagsResponse>, Status> {
        let tags = match self.cache.tags().await {
            Some(tags) => tags,
            None => {
                let loaded_at = self.cache.epoch();
                let tags = Arc::new(self.store.all_tags().await.map_err(status::db)?);
                self.cache.put_tags(tags.clone(), loaded_at).await;
                tags
            }
        };
        Ok(Response::new(pb::ListTagsResponse {
            tags: tags.as_ref().clone(),
        }))
    }
}

fn update_slug_base(new: &Option<String>, current: &str) -> String {
    new.clone().unwrap_or_else(|| current.to_owned())
}
