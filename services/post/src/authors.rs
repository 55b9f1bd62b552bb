//! Who wrote what, as a viewer sees them: the post service's projection of
//! public profiles and follows (tables `author` and `follow`), kept by user events,
//! with the profiles and follow facts a replica has read kept in memory
//! (`cache::Versioned`, learning from the same events on every replica) — so a
//! warm read touches neither the user service nor the database.
//!
//! The projection trails the user service by the event delivery time (a few
//! milliseconds). An author it does not hold yet — an account that registered and
//! posted at once, or one from before the projection existed — is fetched from the
//! user service in one `BatchGetProfiles` call and remembered, with a version that
//! any later event overrides. See ADR 7.

use std::collections::{HashMap, HashSet};

use agora_kit::db::{Db, placeholders};
use agora_kit::events::{self, Envelope, HandleError, types};
use agora_proto::events::v1 as ev;
use agora_proto::post::v1::Author;
use agora_proto::user::v1 as user_pb;
use sqlx::{AssertSqlSafe, Row};
use tonic::Status;
use user_pb::user_internal_service_client::UserInternalServiceClient;

use crate::cache::{FACT_TTL, PairFacts, Versioned};

/// What is shown for an account that no longer exists.
const DELETED: &str = "[deleted]";

/// The version of rows filled from a direct call: lower than every event id.
const FETCHED: &str = "";

#[derive(Clone)]
pub struct Authors {
    db: Db,
    users: UserInternalServiceClient<agora_kit::upstream::TracedChannel>,
    /// Profiles by account id, `following` always false (it is per viewer).
    known: Versioned<String, Author>,
    /// (follower, followee) → follows.
    following: PairFacts,
}

impl std::fmt::Debug for Authors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authors").finish_non_exhaustive()
    }
}

/// A profile change carried by a user event.
#[derive(Debug)]
pub struct ProfileChange<'a> {
    pub user_id: &'a str,
    pub username: &'a str,
    pub bio: Option<&'a str>,
    pub image: Option<&'a str>,
    pub deleted: bool,
}

/// A profile as a `user.registered`, `user.updated` or `user.deleted` event
/// carries it.
#[derive(Debug)]
pub struct ProfileEvent {
    user_id: String,
    username: String,
    bio: Option<String>,
    image: Option<String>,
    deleted: bool,
}

impl ProfileEvent {
    /// The profile in `envelope`; `None` for other event types.
    pub fn of(envelope: &Envelope) -> Result<Option<Self>, HandleError> {
        Ok(Some(match envelope.r#type.as_str() {
            types::USER_REGISTERED => {
                let e: ev::UserRegistered = events::payload(envelope)?;
                Self::new(e.user_id, e.username, None, None, false)
            }
            types::USER_UPDATED => {
                let e: ev::UserUpdated = events::payload(envelope)?;
                Self::new(e.user_id, e.username, e.bio, e.image, false)
            }
            types::USER_DELETED => {
                let e: ev::UserDeleted = events::payload(envelope)?;
                Self::new(e.user_id, e.username, None, None, true)
            }
            _ => return Ok(None),
        }))
    }

    fn new(
        user_id: String,
        username: String,
        bio: Option<String>,
        image: Option<String>,
        deleted: bool,
    ) -> Self {
        Self {
            user_id,
            username,
            bio,
            image,
            deleted,
        }
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn is_deletion(&self) -> bool {
        self.deleted
    }

    pub fn change(&self) -> ProfileChange<'_> {
        ProfileChange {
            user_id: &self.user_id,
            username: &self.username,
            bio: self.bio.as_deref(),
            image: self.image.as_deref(),
            deleted: self.deleted,
        }
    }
}

impl Authors {
    pub fn new(db: Db, users: agora_kit::upstream::Upstream) -> Self {
        Self {
            db,
            users: agora_kit::message_limits!(UserInternalServiceClient::new(
                agora_kit::upstream::TracedChannel::new(users)
            )),
            known: Versioned::new(100_000, FACT_TTL),
            following: Versioned::new(50_000, FACT_TTL),
        }
    }

    /// Profiles of `ids` as `viewer` sees them; unknown ids get a placeholder.
    pub async fn profiles(
        &self,
        ids: impl IntoIterator<Item = &str>,
        viewer: Option<&str>,
    ) -> Result<HashMap<String, Author>, Status> {
        let mut ids: Vec<&str> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut found = HashMap::new();
        let mut unknown = Vec::new();
        for id in &ids {
            match self.known.get(&(*id).to_owned()).await {
                Some(author) => {
                    found.insert((*id).to_owned(), author);
                }
                None => unknown.push(*id),
            }
        }
        if !unknown.is_empty() {
            for (id, author) in self
                .projected(&unknown)
                .await
                .map_err(agora_kit::status::db)?
            {
                self.known.fill(id.clone(), author.clone()).await;
                found.insert(id, author);
            }
        }
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !found.contains_key(*id))
            .collect();
        // Straight from the user service, `following` included.
        let fetched = if missing.is_empty() {
            HashMap::new()
        } else {
            self.fetch(&missing, viewer).await?
        };
        if let Some(viewer) = viewer {
            let projected: Vec<&str> = found.keys().map(String::as_str).collect();
            let followed = self.following_among(viewer, &projected).await?;
            for (id, author) in &mut found {
                author.following = followed.contains(id);
            }
        }
        found.extend(fetched);
        Ok(ids
            .into_iter()
            .map(|id| {
                let author = found.remove(id).unwrap_or_else(deleted);
                (id.to_owned(), author)
            })
            .collect())
    }

    /// Which of `ids` `viewer` follows: from memory, the rest in one query.
    async fn following_among(&self, viewer: &str, ids: &[&str]) -> Result<HashSet<String>, Status> {
        self.following
            .among(viewer, ids, |unknown| async move {
                let found = agora_kit::db::strings_in(
                    self.db.pool(),
                    "SELECT followee_id FROM follow \
                     WHERE follower_id = $1 AND following = 1 AND followee_id IN ({ids})",
                    &[viewer],
                    &unknown,
                )
                .await?;
                Ok::<_, sqlx::Error>(found.into_iter().collect())
            })
            .await
            .map_err(agora_kit::status::db)
    }

    /// The projection's rows for `ids` (`following` unset), in one query.
    /// Tombstones come back as the deleted placeholder.
    async fn projected(&self, ids: &[&str]) -> Result<HashMap<String, Author>, sqlx::Error> {
        let sql = format!(
            "SELECT id, username, bio, image, deleted FROM author WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(*id);
        }
        query
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                let author = if row.try_get::<i64, _>(4)? != 0 {
                    deleted()
                } else {
                    Author {
                        username: row.try_get(1)?,
                        bio: row.try_get(2)?,
                        image: row.try_get(3)?,
                        following: false,
                    }
                };
                Ok((id, author))
            })
            .collect()
    }

    /// What a profile event says, for this replica's memory.
    pub async fn learn_profile(&self, change: &ProfileChange<'_>, version: &str) {
        let author = if change.deleted {
            deleted()
        } else {
            Author {
                username: change.username.to_owned(),
                bio: change.bio.map(str::to_owned),
                image: change.image.map(str::to_owned),
                following: false,
            }
        };
        self.known
            .learn(change.user_id.to_owned(), author, version)
            .await;
    }

    /// What a follow event says, for this replica's memory.
    pub async fn learn_follow(&self, follower: &str, followee: &str, follows: bool, version: &str) {
        self.following
            .learn((follower.to_owned(), followee.to_owned()), follows, version)
            .await;
    }

    /// Profiles the projection lacks, from the user service; remembered so the
    /// next read finds them locally.
    async fn fetch(
        &self,
        ids: &[&str],
        viewer: Option<&str>,
    ) -> Result<HashMap<String, Author>, Status> {
        let profiles = self
            .users
            .clone()
            .batch_get_profiles(user_pb::BatchGetProfilesRequest {
                user_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
                viewer_id: viewer.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(upstream)?
            .into_inner()
            .profiles;
        for (id, p) in &profiles {
            let change = ProfileChange {
                user_id: id,
                username: &p.username,
                bio: p.bio.as_deref(),
                image: p.image.as_deref(),
                deleted: false,
            };
            let remembered = match (self.apply_profile(&change, FETCHED).await, viewer) {
                (Ok(()), Some(viewer)) if p.following => {
                    self.apply_follow(viewer, id, true, FETCHED).await
                }
                (outcome, _) => outcome,
            };
            if let Err(err) = remembered {
                // The answer is still right; the next read asks again.
                tracing::warn!(error = %err, "remembering a fetched profile failed");
            }
        }
        Ok(profiles
            .into_iter()
            .map(|(id, p)| {
                let author = Author {
                    username: p.username,
                    bio: p.bio,
                    image: p.image,
                    following: p.following,
                };
                (id, author)
            })
            .collect())
    }

    /// The account id of a username, if it exists.
    pub async fn id_of(&self, username: &str) -> Result<Option<String>, Status> {
        let local: Option<String> = sqlx::query(
            "SELECT id FROM author WHERE username = $1 AND deleted = 0 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(username)
        .fetch_optional(self.db.pool())
        .await
        .map_err(agora_kit::status::db)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(agora_kit::status::db)?;
        if local.is_some() {
            return Ok(local);
        }
        // Not projected (yet): the user service has the last word.
        let mut ids = self
            .users
            .clone()
            .resolve_usernames(user_pb::ResolveUsernamesRequest {
                usernames: vec![username.to_owned()],
            })
            .await
            .map_err(upstream)?
            .into_inner()
            .user_ids;
        Ok(ids.remove(username))
    }

    /// Whom `user_id` follows. Asked of the user service, not the projection: the
    /// feed must show an author the moment the viewer follows them.
    pub async fn followees(&self, user_id: &str) -> Result<Vec<String>, Status> {
        Ok(self
            .users
            .clone()
            .list_followees(user_pb::ListFolloweesRequest {
                user_id: user_id.to_owned(),
            })
            .await
            .map_err(upstream)?
            .into_inner()
            .user_ids)
    }

    /// Records a profile as of event `version`, unless a later one is recorded.
    pub async fn apply_profile(
        &self,
        change: &ProfileChange<'_>,
        version: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO author (id, username, bio, image, deleted, version) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET username = excluded.username, bio = excluded.bio, \
             image = excluded.image, deleted = excluded.deleted, version = excluded.version \
             WHERE author.version < excluded.version",
        )
        .bind(change.user_id)
        .bind(change.username)
        .bind(change.bio)
        .bind(change.image)
        .bind(i64::from(change.deleted))
        .bind(version)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Records whether `follower` follows `followee` as of event `version`,
    /// unless a later event is recorded.
    pub async fn apply_follow(
        &self,
        follower: &str,
        followee: &str,
        following: bool,
        version: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO follow (follower_id, followee_id, following, version) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (follower_id, followee_id) DO UPDATE SET following = excluded.following, \
             version = excluded.version WHERE follow.version < excluded.version",
        )
        .bind(follower)
        .bind(followee)
        .bind(i64::from(following))
        .bind(version)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

fn deleted() -> Author {
    Author {
        username: DELETED.to_owned(),
        ..Author::default()
    }
}

fn upstream(err: Status) -> Status {
    tracing::error!(code = ?err.code(), message = err.message(), "user service call failed");
    Status::unavailable("profile service unavailable, try again")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn projection() -> (Authors, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let target = agora_kit::config::DatabaseTarget::Sqlite(dir.path().join("post.db"));
        let db = crate::open_db(&target).await.unwrap();
        // Never dialled: these tests only read what the projection holds.
        let users = agora_kit::upstream::remote(
            tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy(),
        );
        (Authors::new(db, users), dir)
    }

    fn profile<'a>(username: &'a str, deleted: bool) -> ProfileChange<'a> {
        ProfileChange {
            user_id: "u1",
            username,
            bio: None,
            image: None,
            deleted,
        }
    }

    #[tokio::test]
    async fn an_overtaken_event_never_undoes_a_later_one() {
        let (authors, _dir) = projection().await;
        authors
            .apply_profile(&profile("ann", false), "v1")
            .await
            .unwrap();
        authors
            .apply_follow("fan", "u1", false, "v3")
            .await
            .unwrap();
        authors.apply_follow("fan", "u1", true, "v2").await.unwrap();
        authors
            .apply_profile(&profile("ann", true), "v5")
            .await
            .unwrap();
        authors
            .apply_profile(&profile("anna", false), "v4")
            .await
            .unwrap();

        let seen = authors.projected(&["u1"]).await.unwrap();
        let followed = authors.following_among("fan", &["u1"]).await.unwrap();

        assert_eq!(seen["u1"].username, DELETED);
        assert!(followed.is_empty());
    }

    #[tokio::test]
    async fn fetched_rows_give_way_to_any_event_and_redelivery_changes_nothing() {
        let (authors, _dir) = projection().await;
        authors
            .apply_profile(&profile("ann", false), FETCHED)
            .await
            .unwrap();
        authors
            .apply_follow("fan", "u1", true, FETCHED)
            .await
            .unwrap();
        authors
            .apply_profile(&profile("anna", false), "v1")
            .await
            .unwrap();
        authors
            .apply_follow("fan", "u1", false, "v2")
            .await
            .unwrap();
        authors
            .apply_follow("fan", "u1", false, "v2")
            .await
            .unwrap();
        authors
            .apply_profile(&profile("ann", false), FETCHED)
            .await
            .unwrap();

        let seen = authors.projected(&["u1"]).await.unwrap();
        let followed = authors.following_among("fan", &["u1"]).await.unwrap();

        assert_eq!(seen["u1"].username, "anna");
        assert!(followed.is_empty());
        assert_eq!(authors.id_of("anna").await.unwrap().as_deref(), Some("u1"));
    }
}
