//! Authors come from the user service: one `BatchGetProfiles` call per page,
//! never one call per row, so profiles are always current (a changed bio or a
//! deleted account shows at once).

use std::collections::HashMap;

use agora_proto::post::v1::Author;
use agora_proto::user::v1 as user_pb;
use tonic::Status;
use tonic::transport::Channel;
use user_pb::user_internal_service_client::UserInternalServiceClient;

/// What is shown for an account that no longer exists.
const DELETED: &str = "[deleted]";

#[derive(Debug, Clone)]
pub struct Authors {
    users: UserInternalServiceClient<agora_kit::upstream::TracedChannel>,
}

impl Authors {
    pub fn new(users: Channel) -> Self {
        Self {
            users: UserInternalServiceClient::new(agora_kit::upstream::TracedChannel::new(users)),
        }
    }

    /// Profiles of `ids` as `viewer` sees them; unknown ids get a placeholder.
    pub async fn profiles(
        &self,
        ids: impl IntoIterator<Item = &str>,
        viewer: Option<&str>,
    ) -> Result<HashMap<String, Author>, Status> {
        let mut user_ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        user_ids.sort();
        user_ids.dedup();
        if user_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let found = self
            .users
            .clone()
            .batch_get_profiles(user_pb::BatchGetProfilesRequest {
                user_ids: user_ids.clone(),
                viewer_id: viewer.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(upstream)?
            .into_inner()
            .profiles;
        Ok(user_ids
            .into_iter()
            .map(|id| {
                let author = match found.get(&id) {
                    Some(p) => Author {
                        username: p.username.clone(),
                        bio: p.bio.clone(),
                        image: p.image.clone(),
                        following: p.following,
                    },
                    None => Author {
                        username: DELETED.to_owned(),
                        ..Author::default()
                    },
                };
                (id, author)
            })
            .collect())
    }

    /// The account id of a username, if it exists.
    pub async fn id_of(&self, username: &str) -> Result<Option<String>, Status> {
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

    /// Whom `user_id` follows.
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
}

fn upstream(err: Status) -> Status {
    tracing::error!(code = ?err.code(), message = err.message(), "user service call failed");
    Status::unavailable("profile service unavailable, try again")
}
