//! `agora.auth.v1.AuthService` handlers.

use std::sync::Arc;
use std::time::Duration;

use agora_kit::status::{self, FieldViolation};
use agora_kit::token::{Role, TokenVerifier};
use agora_proto::auth::v1 as pb;
use agora_proto::user::v1 as user_pb;
use pb::auth_service_server::AuthService;
use tonic::{Code, Request, Response, Status};
use user_pb::user_internal_service_client::UserInternalServiceClient;

use crate::keys::KeyRing;
use crate::store::{Reason, Rotation, SessionLimits, Store};
use crate::throttle::LoginThrottle;
use crate::tokens::{Minter, Subject};

/// The auth service and what it needs.
#[derive(Clone)]
pub struct AuthApi {
    store: Store,
    keys: Arc<KeyRing>,
    minter: Minter,
    limits: SessionLimits,
    users: UserInternalServiceClient<agora_kit::upstream::TracedChannel>,
    verifier: TokenVerifier,
    throttle: LoginThrottle,
}

impl AuthApi {
    pub fn new(
        store: Store,
        keys: Arc<KeyRing>,
        minter: Minter,
        limits: SessionLimits,
        users: agora_kit::upstream::Upstream,
        verifier: TokenVerifier,
    ) -> Self {
        Self {
            throttle: LoginThrottle::standard(store.db().clone()),
            store,
            keys,
            minter,
            limits,
            users: agora_kit::message_limits!(UserInternalServiceClient::new(
                agora_kit::upstream::TracedChannel::new(users)
            )),
            verifier,
        }
    }

    /// Starts a session for `account` and builds the signed-in answer.
    async fn sign_in<T>(
        &self,
        request: &Request<T>,
        account: user_pb::Account,
    ) -> Result<pb::SignedInUser, Status> {
        let client = client_of(request);
        let session = self
            .store
            .start_session(&account.id, &client.user_agent, &client.ip, self.limits)
            .await
            .map_err(status::internal)?;
        let token = self.access_token(&account.id, &session.session_id, account.role)?;
        Ok(pb::SignedInUser {
            email: account.email,
            token,
            username: account.username,
            bio: account.bio,
            image: account.image,
            refresh_token: session.refresh_token,
        })
    }

    fn access_token(&self, user_id: &str, session_id: &str, role: i32) -> Result<String, Status> {
        let role = Role::from_pb(role).ok_or_else(|| {
            status::internal(anyhow::anyhow!("account has no known role: {role}"))
        })?;
        self.minter
            .access_token(
                &self.keys,
                Subject {
                    user_id,
                    session_id,
                    role,
                },
            )
            .map_err(status::internal)
    }
}

/// Who is calling: the gateway sets `x-real-ip` to the peer it saw.
struct Client {
    ip: String,
    user_agent: String,
}

fn client_of<T>(request: &Request<T>) -> Client {
    let header = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let ip = header("x-real-ip")
        .or_else(|| request.remote_addr().map(|a| a.ip().to_string()))
        .unwrap_or_default();
    Client {
        ip,
        user_agent: header("user-agent").unwrap_or_default(),
    }
}

/// Passes a user-service answer on to the client: validation and conflict errors
/// as they are (with their field violations), anything else as unavailable.
fn relay(err: Status) -> Status {
    match err.code() {
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::Unauthenticated
        | Code::NotFound
        | Code::PermissionDenied
        | Code::ResourceExhausted => Status::with_details(
            err.code(),
            err.message().to_owned(),
            err.details().to_vec().into(),
        ),
        _ => {
            tracing::error!(code = ?err.code(), message = err.message(), "user service call failed");
            Status::unavailable("identity service unavailable, try again")
        }
    }
}

fn required(field: &str, value: &str) -> Option<FieldViolation> {
    value
        .trim()
        .is_empty()
        .then(|| FieldViolation::new(field, "can't be blank"))
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[tracing::instrument(skip_all)]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let new = request.get_ref().user.clone().unwrap_or_default();
        let created = self
            .users
            .clone()
            .create_user(user_pb::CreateUserRequest {
                username: new.username,
                email: new.email,
                password: new.password,
            })
            .await
            .map_err(relay)?
            .into_inner()
            .user
            .ok_or_else(|| status::internal(anyhow::anyhow!("CreateUser returned no user")))?;
        let user = self.sign_in(&request, created).await?;
        Ok(Response::new(pb::RegisterResponse { user: Some(user) }))
    }

    #[tracing::instrument(skip_all)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let credentials = request.get_ref().user.clone().unwrap_or_default();
        let violations: Vec<_> = [
            required("email", &credentials.email),
            required("password", &credentials.password),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !violations.is_empty() {
            return Err(status::invalid(violations));
        }
        let ip = client_of(&request).ip;
        self.throttle.check(&credentials.email, &ip).await?;
        let verified = self
            .users
            .clone()
            .verify_credentials(user_pb::VerifyCredentialsRequest {
                email: credentials.email.clone(),
                password: credentials.password,
            })
            .await;
        let account = match verified {
            Ok(response) => response.into_inner().user.ok_or_else(|| {
                status::internal(anyhow::anyhow!("VerifyCredentials returned no user"))
            })?,
            Err(err) if err.code() == Code::Unauthenticated => {
                if let Err(err) = self.throttle.failed(&credentials.email, &ip).await {
                    tracing::warn!(error = %err, "recording a failed sign-in failed");
                }
                return Err(Status::unauthenticated("email or password is invalid"));
            }
            Err(err) => return Err(relay(err)),
        };
        if let Err(err) = self.throttle.succeeded(&credentials.email).await {
            tracing::warn!(error = %err, "clearing failed sign-ins failed");
        }
        let user = self.sign_in(&request, account).await?;
        Ok(Response::new(pb::LoginResponse { user: Some(user) }))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let presented = request.into_inner().refresh_token;
        if let Some(v) = required("refreshToken", &presented) {
            return Err(status::invalid(vec![v]));
        }
        let rotation = self
            .store
            .rotate(&presented, self.limits, agora_kit::db::now_micros())
            .await
            .map_err(status::internal)?;
        let (session_id, user_id, refresh_token) = match rotation {
            Rotation::Rotated {
                session_id,
                user_id,
                refresh_token,
            } => (session_id, user_id, refresh_token),
            Rotation::Reused { .. } => {
                return Err(Status::unauthenticated(
                    "refresh token already used: the session has been revoked",
                ));
            }
            Rotation::Invalid => {
                return Err(Status::unauthenticated(
                    "refresh token is invalid or expired",
                ));
            }
        };
        // The role may have changed, or the account may be gone, since sign-in.
        let account = match self
            .users
            .clone()
            .get_user(user_pb::GetUserRequest {
                id: user_id.clone(),
            })
            .await
        {
            Ok(response) => response.into_inner().user.unwrap_or_default(),
            Err(err) if err.code() == Code::NotFound => {
                self.store
                    .revoke_all(&user_id, Reason::AccountDeleted)
                    .await
                    .map_err(status::db)?;
                return Err(Status::unauthenticated("this account no longer exists"));
            }
            Err(err) => return Err(relay(err)),
        };
        let token = self.access_token(&user_id, &session_id, account.role)?;
        Ok(Response::new(pb::RefreshTokenResponse {
            token,
            refresh_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let presented = request.into_inner().refresh_token;
        if let Some(v) = required("refreshToken", &presented) {
            return Err(status::invalid(vec![v]));
        }
        // Logging out twice, or with a stale token, is not worth an error.
        self.store
            .revoke_by_token(&presented)
            .await
            .map_err(status::db)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let principal = self.verifier.require(&request).await?;
        let sessions = self
            .store
            .active_sessions(&principal.user_id)
            .await
            .map_err(status::db)?
            .into_iter()
            .map(|s| pb::Session {
                current: s.id == principal.session_id,
                id: s.id,
                created_at: Some(agora_kit::db::timestamp(s.created_at)),
                last_used_at: Some(agora_kit::db::timestamp(s.last_used_at)),
                expires_at: Some(agora_kit::db::timestamp(s.expires_at)),
                user_agent: s.user_agent,
                ip_address: s.ip_address,
            })
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let principal = self.verifier.require(&request).await?;
        let revoked = self
            .store
            .revoke_session(&principal.user_id, &request.get_ref().id)
            .await
            .map_err(status::db)?;
        if !revoked {
            return Err(Status::not_found("no such session"));
        }
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn logout_all(
        &self,
        request: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        let principal = self.verifier.require(&request).await?;
        let ended = self
            .store
            .revoke_all(&principal.user_id, Reason::LogoutAll)
            .await
            .map_err(status::db)?;
        tracing::info!(user_id = %principal.user_id, sessions = ended, "signed out everywhere");
        Ok(Response::new(pb::LogoutAllResponse {}))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .keys
            .public_keys()
            .iter()
            .map(|k| pb::Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: k.x.clone(),
                kid: k.kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }
}

/// `agora.auth.v1.AuthInternalService`: what other agora services ask of auth.
#[derive(Clone)]
pub struct AuthInternalApi {
    store: Store,
    /// How far back revocations still matter (the access-token lifetime + leeway).
    window: Duration,
}

impl AuthInternalApi {
    pub fn new(store: Store, window: Duration) -> Self {
        Self { store, window }
    }
}

#[tonic::async_trait]
impl pb::auth_internal_service_server::AuthInternalService for AuthInternalApi {
    #[tracing::instrument(skip_all)]
    async fn list_revocations(
        &self,
        _request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        let window = i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX);
        let since = agora_kit::db::now_micros().saturating_sub(window);
        let rows = self
            .store
            .revocations_since(since)
            .await
            .map_err(status::db)?;
        let timestamp = agora_kit::db::timestamp;
        Ok(Response::new(pb::ListRevocationsResponse {
            sessions: rows
                .sessions
                .into_iter()
                .map(|(id, user_id, at)| pb::RevokedSession {
                    id,
                    user_id,
                    revoked_at: Some(timestamp(at)),
                })
                .collect(),
            roles: rows
                .roles
                .into_iter()
                .map(|(user_id, role, at)| pb::RoleChange {
                    user_id,
                    role: role.to_pb() as i32,
                    changed_at: Some(timestamp(at)),
                })
                .collect(),
        }))
    }
}
