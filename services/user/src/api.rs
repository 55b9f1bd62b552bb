//! gRPC handlers: decode, authorize, call the store, map errors. Public RPCs
//! (`UserService`) read the caller from their access token; internal ones
//! (`UserInternalService`) serve the other agora services.

use agora_kit::status::{self, FieldViolation};
use agora_kit::token::{Principal, Role, TokenVerifier};
use agora_proto::user::v1 as pb;
use pb::user_internal_service_server::UserInternalService;
use pb::user_service_server::UserService;
use tonic::{Request, Response, Status};

use crate::domain::{Email, Password, Username, Violations, parse_bio, parse_image};
use crate::password::Hasher;
use crate::store::{AccountChanges, AccountRow, NewAccount, RoleKey, Store, StoreError};

/// Shared by both gRPC services of the user target.
#[derive(Clone)]
struct Core {
    store: Store,
    hasher: Hasher,
    verifier: TokenVerifier,
    /// Registering with this email makes the account an admin (bootstrap).
    admin_email: Option<String>,
}

/// `agora.user.v1.UserService`.
#[derive(Clone)]
pub struct UserApi {
    core: Core,
}

/// `agora.user.v1.UserInternalService`.
#[derive(Clone)]
pub struct UserInternalApi {
    core: Core,
}

/// Both services of the user target, sharing one store and hasher.
pub fn services(
    store: Store,
    hasher: Hasher,
    verifier: TokenVerifier,
    admin_email: Option<String>,
) -> (UserApi, UserInternalApi) {
    let core = Core {
        store,
        hasher,
        verifier,
        admin_email,
    };
    (UserApi { core: core.clone() }, UserInternalApi { core })
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Taken(field) => status::taken(field),
            StoreError::Db(err) => status::db(err),
        }
    }
}

fn to_account(row: AccountRow) -> pb::Account {
    pb::Account {
        id: row.id,
        email: row.email,
        username: row.username,
        bio: row.bio,
        image: row.image,
        role: row.role.to_pb() as i32,
        created_at: Some(agora_kit::db::timestamp(row.created_at)),
        updated_at: Some(agora_kit::db::timestamp(row.updated_at)),
    }
}

fn to_current_user(row: AccountRow, token: String) -> pb::CurrentUser {
    pb::CurrentUser {
        email: row.email,
        token,
        username: row.username,
        bio: row.bio,
        image: row.image,
        role: row.role.to_pb() as i32,
    }
}

fn to_profile(row: AccountRow, following: bool) -> pb::Profile {
    pb::Profile {
        username: row.username,
        bio: row.bio,
        image: row.image,
        following,
    }
}

impl Core {
    /// The caller's own account; a token for a deleted account is no longer good.
    async fn me(&self, principal: &Principal) -> Result<AccountRow, Status> {
        self.store
            .find_by_id(&principal.user_id)
            .await
            .map_err(status::db)?
            .ok_or_else(|| Status::unauthenticated("this account no longer exists"))
    }

    async fn by_username(&self, raw: &str) -> Result<AccountRow, Status> {
        // Anything that is not a valid username cannot name an account.
        let username = Username::parse(raw).map_err(|_| not_found_user())?;
        self.store
            .find_by_username(username.as_str())
            .await
            .map_err(status::db)?
            .ok_or_else(not_found_user)
    }

    async fn require_admin<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let principal = self.verifier.require(request).await?;
        if !principal.is_admin() {
            return Err(Status::permission_denied("administrators only"));
        }
        Ok(principal)
    }
}

fn not_found_user() -> Status {
    Status::not_found("no such user")
}

#[tonic::async_trait]
impl UserService for UserApi {
    #[tracing::instrument(skip_all)]
    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let principal = self.core.verifier.require(&request).await?;
        let me = self.core.me(&principal).await?;
        Ok(Response::new(pb::GetCurrentUserResponse {
            user: Some(to_current_user(me, principal.token)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_current_user(
        &self,
        request: Request<pb::UpdateCurrentUserRequest>,
    ) -> Result<Response<pb::UpdateCurrentUserResponse>, Status> {
        let principal = self.core.verifier.require(&request).await?;
        let changes = request.into_inner().user.unwrap_or_default();
        let mut violations = Violations::default();
        let email = changes
            .email
            .as_deref()
            .and_then(|e| violations.check(Email::parse(e)));
        let username = changes
            .username
            .as_deref()
            .and_then(|u| violations.check(Username::parse(u)));
        let password = changes
            .password
            .as_deref()
            .and_then(|p| violations.check(Password::parse(p)));
        let bio = changes
            .bio
            .as_deref()
            .and_then(|b| violations.check(parse_bio(b)));
        let image = changes
            .image
            .as_deref()
            .and_then(|i| violations.check(parse_image(i)));
        violations.into_result()?;

        let password_hash = match password {
            Some(p) => Some(self.core.hasher.hash(&p).await.map_err(status::internal)?),
            None => None,
        };
        let updated = self
            .core
            .store
            .update_account(
                &principal.user_id,
                AccountChanges {
                    email: email.map(|e| e.as_str().to_owned()),
                    username: username.map(|u| u.as_str().to_owned()),
                    password_hash,
                    bio,
                    image,
                },
            )
            .await?
            .ok_or_else(|| Status::unauthenticated("this account no longer exists"))?;
        Ok(Response::new(pb::UpdateCurrentUserResponse {
            user: Some(to_current_user(updated, principal.token)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let viewer = self.core.verifier.authenticate(&request).await?;
        let target = self.core.by_username(&request.get_ref().username).await?;
        let following = match viewer {
            Some(v) => self
                .core
                .store
                .is_following(&v.user_id, &target.id)
                .await
                .map_err(status::db)?,
            None => false,
        };
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(to_profile(target, following)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn follow_user(
        &self,
        request: Request<pb::FollowUserRequest>,
    ) -> Result<Response<pb::FollowUserResponse>, Status> {
        let principal = self.core.verifier.require(&request).await?;
        let target = self.core.by_username(&request.get_ref().username).await?;
        if target.id == principal.user_id {
            return Err(status::invalid(vec![FieldViolation::new(
                "username",
                "you cannot follow yourself",
            )]));
        }
        self.core
            .store
            .follow(&principal.user_id, &target.id)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::FollowUserResponse {
            profile: Some(to_profile(target, true)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn unfollow_user(
        &self,
        request: Request<pb::UnfollowUserRequest>,
    ) -> Result<Response<pb::UnfollowUserResponse>, Status> {
        let principal = self.core.verifier.require(&request).await?;
        let target = self.core.by_username(&request.get_ref().username).await?;
        self.core
            .store
            .unfollow(&principal.user_id, &target.id)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::UnfollowUserResponse {
            profile: Some(to_profile(target, false)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.core.require_admin(&request).await?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 20,
            1..=100 => req.limit,
            _ => {
                return Err(status::invalid(vec![FieldViolation::new(
                    "limit",
                    "must be between 1 and 100",
                )]));
            }
        };
        let after = if req.cursor.is_empty() {
            None
        } else {
            Some(decode_cursor(&req.cursor).ok_or_else(|| {
                status::invalid(vec![FieldViolation::new("cursor", "is invalid")])
            })?)
        };
        // One extra row tells whether another page follows.
        let mut rows = self
            .core
            .store
            .list_accounts(after, i64::from(limit) + 1)
            .await
            .map_err(status::db)?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|r| encode_cursor(r.created_at, &r.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: rows.into_iter().map(to_account).collect(),
            next_cursor,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        self.core.require_admin(&request).await?;
        let req = request.into_inner();
        let role = Role::from_pb(req.role).ok_or_else(|| {
            status::invalid(vec![FieldViolation::new(
                "role",
                "must be ROLE_USER, ROLE_MODERATOR or ROLE_ADMIN",
            )])
        })?;
        let target = self.core.by_username(&req.username).await?;
        let updated = self
            .core
            .store
            .set_role(RoleKey::Username(&target.username), role)
            .await
            .map_err(status::db)?
            .ok_or_else(not_found_user)?;
        tracing::info!(user_id = %updated.id, role = role.as_str(), "role changed");
        Ok(Response::new(pb::SetUserRoleResponse {
            user: Some(to_account(updated)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let admin = self.core.require_admin(&request).await?;
        let target = self.core.by_username(&request.get_ref().username).await?;
        if target.id == admin.user_id {
            return Err(Status::failed_precondition(
                "administrators cannot delete their own account here",
            ));
        }
        self.core
            .store
            .delete_account(&target.id)
            .await
            .map_err(status::db)?;
        tracing::info!(user_id = %target.id, "account deleted");
        Ok(Response::new(pb::DeleteUserResponse {}))
    }
}

impl UserInternalApi {
    /// After a successful sign-in, replaces a hash made with older argon2
    /// parameters: the password is at hand only now. A failure changes nothing
    /// for this sign-in; the next one tries again.
    async fn upgrade_hash(&self, row: &AccountRow, password: &str) {
        if !crate::password::needs_rehash(&row.password_hash) {
            return;
        }
        // A password from before today's rules cannot be re-parsed; it keeps its hash.
        let Ok(password) = Password::parse(password) else {
            return;
        };
        let upgraded = match self.core.hasher.hash(&password).await {
            Ok(hash) => self
                .core
                .store
                .upgrade_hash(&row.id, &row.password_hash, &hash)
                .await
                .map_err(anyhow::Error::from),
            Err(err) => Err(err),
        };
        match upgraded {
            Ok(true) => tracing::info!(user_id = %row.id, "password hash upgraded"),
            Ok(false) => {}
            Err(err) => tracing::warn!(user_id = %row.id, error = %err, "upgrading a hash failed"),
        }
    }
}

#[tonic::async_trait]
impl UserInternalService for UserInternalApi {
    #[tracing::instrument(skip_all)]
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let req = request.into_inner();
        let mut violations = Violations::default();
        let username = violations.check(Username::parse(&req.username));
        let email = violations.check(Email::parse(&req.email));
        let password = violations.check(Password::parse(&req.password));
        violations.into_result()?;
        let (Some(username), Some(email), Some(password)) = (username, email, password) else {
            unreachable!("violations are empty only when every field parsed");
        };
        // Answer "taken" before paying for a hash; the unique constraints still
        // decide races between concurrent registrations.
        if self
            .core
            .store
            .find_by_email(email.as_str())
            .await
            .map_err(status::db)?
            .is_some()
        {
            return Err(status::taken("email"));
        }
        if self
            .core
            .store
            .find_by_username(username.as_str())
            .await
            .map_err(status::db)?
            .is_some()
        {
            return Err(status::taken("username"));
        }
        let password_hash = self
            .core
            .hasher
            .hash(&password)
            .await
            .map_err(status::internal)?;
        // The bootstrap grant: only while nobody is an admin, so the address
        // cannot be registered again later (after its account was deleted) to
        // take admin rights. Afterwards admins grant roles.
        let bootstrap = self.core.admin_email.as_deref() == Some(email.as_str())
            && !self.core.store.has_admin().await.map_err(status::db)?;
        let role = if bootstrap { Role::Admin } else { Role::User };
        let row = self
            .core
            .store
            .insert_account(NewAccount {
                email: email.as_str(),
                username: username.as_str(),
                password_hash: &password_hash,
                role,
            })
            .await?;
        tracing::info!(user_id = %row.id, "account created");
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(to_account(row)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn verify_credentials(
        &self,
        request: Request<pb::VerifyCredentialsRequest>,
    ) -> Result<Response<pb::VerifyCredentialsResponse>, Status> {
        let req = request.into_inner();
        let mut violations = Violations::default();
        if req.email.trim().is_empty() {
            violations
                .0
                .push(FieldViolation::new("email", "can't be blank"));
        }
        if req.password.is_empty() {
            violations
                .0
                .push(FieldViolation::new("password", "can't be blank"));
        }
        violations.into_result()?;
        let row = match Email::parse(&req.email) {
            Ok(email) => self
                .core
                .store
                .find_by_email(email.as_str())
                .await
                .map_err(status::db)?,
            Err(_) => None,
        };
        let ok = self
            .core
            .hasher
            .verify(&req.password, row.as_ref().map(|r| r.password_hash.clone()))
            .await
            .map_err(status::internal)?;
        match row {
            Some(row) if ok => {
                self.upgrade_hash(&row, &req.password).await;
                Ok(Response::new(pb::VerifyCredentialsResponse {
                    user: Some(to_account(row)),
                }))
            }
            _ => Err(Status::unauthenticated("email or password is invalid")),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let row = self
            .core
            .store
            .find_by_id(&request.get_ref().id)
            .await
            .map_err(status::db)?
            .ok_or_else(not_found_user)?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(to_account(row)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_get_profiles(
        &self,
        request: Request<pb::BatchGetProfilesRequest>,
    ) -> Result<Response<pb::BatchGetProfilesResponse>, Status> {
        let req = request.into_inner();
        if req.user_ids.len() > 1000 {
            return Err(status::invalid(vec![FieldViolation::new(
                "userIds",
                "at most 1000 per call",
            )]));
        }
        let rows = self
            .core
            .store
            .find_many(&req.user_ids)
            .await
            .map_err(status::db)?;
        let followed = if req.viewer_id.is_empty() {
            Default::default()
        } else {
            self.core
                .store
                .followed_among(&req.viewer_id, &req.user_ids)
                .await
                .map_err(status::db)?
        };
        let profiles = rows
            .into_iter()
            .map(|row| {
                let following = followed.contains(&row.id);
                (row.id.clone(), to_profile(row, following))
            })
            .collect();
        Ok(Response::new(pb::BatchGetProfilesResponse { profiles }))
    }

    #[tracing::instrument(skip_all)]
    async fn resolve_usernames(
        &self,
        request: Request<pb::ResolveUsernamesRequest>,
    ) -> Result<Response<pb::ResolveUsernamesResponse>, Status> {
        let usernames = request.into_inner().usernames;
        if usernames.len() > 1000 {
            return Err(status::invalid(vec![FieldViolation::new(
                "usernames",
                "at most 1000 per call",
            )]));
        }
        let user_ids = self
            .core
            .store
            .ids_of(&usernames)
            .await
            .map_err(status::db)?
            .into_iter()
            .collect();
        Ok(Response::new(pb::ResolveUsernamesResponse { user_ids }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_followees(
        &self,
        request: Request<pb::ListFolloweesRequest>,
    ) -> Result<Response<pb::ListFolloweesResponse>, Status> {
        let user_ids = self
            .core
            .store
            .followees(&request.get_ref().user_id, MAX_FOLLOWEES)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::ListFolloweesResponse { user_ids }))
    }
}

/// Most follows a feed considers; beyond it the oldest follows are left out.
const MAX_FOLLOWEES: i64 = 5000;

fn encode_cursor(created_at: i64, id: &str) -> String {
    format!("{created_at}.{id}")
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let (created_at, id) = cursor.split_once('.')?;
    Some((created_at.parse().ok()?, id.to_owned()))
}
