//! Access-token verification, done by every service for itself.
//!
//! Tokens are EdDSA-signed JWTs from the auth service. Public keys come as a JWKS
//! from a [`JwksSource`] (the auth service over gRPC, or its own key ring inside
//! the auth service), are cached, and are fetched again when a token names a `kid`
//! the cache does not hold — that is how a new key reaches every replica — or when
//! the cache is older than [`JWKS_TTL`], which is how a retired or removed key
//! stops verifying everywhere without a restart.
//!
//! A token that verified is remembered for a minute (never past its expiry), so a
//! client's requests after the first skip the signature check: an Ed25519
//! verification costs more than the rest of a cached article read.
//!
//! Every token, remembered or not, is then held against the replica's
//! [`Revocations`]: a token of an ended session is refused, and a role changed
//! since the token was signed replaces the role it claims.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;
use tonic::Status;

use crate::revocation::Revocations;

/// What an account may do beyond its own content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Moderator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }

    /// The contract's enum value; the one mapping every service uses.
    pub fn to_pb(self) -> agora_proto::user::v1::Role {
        use agora_proto::user::v1::Role as Pb;
        match self {
            Role::User => Pb::User,
            Role::Moderator => Pb::Moderator,
            Role::Admin => Pb::Admin,
        }
    }

    /// The role an enum value names; none for unspecified or unknown values.
    pub fn from_pb(raw: i32) -> Option<Self> {
        use agora_proto::user::v1::Role as Pb;
        match Pb::try_from(raw).ok()? {
            Pb::Unspecified => None,
            Pb::User => Some(Role::User),
            Pb::Moderator => Some(Role::Moderator),
            Pb::Admin => Some(Role::Admin),
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "user" => Some(Role::User),
            "moderator" => Some(Role::Moderator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The claims of an agora access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Account id.
    pub sub: String,
    /// Session (refresh-token family) the token was issued in.
    pub sid: String,
    /// Role at issue time; a later change overrides it (see [`Revocations`]).
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// The caller of an RPC, once their token checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub session_id: String,
    pub role: Role,
    /// The raw token, for responses that echo it (Conduit's `user.token`).
    pub token: String,
}

impl Principal {
    /// Moderators and admins may remove other people's content.
    pub fn can_moderate(&self) -> bool {
        self.role >= Role::Moderator
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// One public key of a JWKS: Ed25519, `x` in base64url.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub kid: String,
    pub x: String,
}

/// Where verification keys come from.
pub trait JwksSource: Send + Sync + 'static {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<PublicKey>>> + Send + '_>>;
}

/// Fetches the JWKS from the auth service over gRPC.
pub struct GrpcJwks {
    channel: crate::upstream::Upstream,
}

impl GrpcJwks {
    pub fn new(channel: crate::upstream::Upstream) -> Self {
        Self { channel }
    }
}

impl JwksSource for GrpcJwks {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<PublicKey>>> + Send + '_>> {
        Box::pin(async move {
            use agora_proto::auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient};
            // Traced: a fetch caused by a request belongs to that request's trace.
            let channel = crate::upstream::TracedChannel::new(self.channel.clone());
            let response = crate::message_limits!(AuthServiceClient::new(channel))
                .get_jwks(GetJwksRequest {})
                .await?
                .into_inner();
            Ok(response
                .keys
                .into_iter()
                .map(|k| PublicKey { kid: k.kid, x: k.x })
                .collect())
        })
    }
}

/// How often an unknown `kid` may trigger a fetch; forged tokens with random
/// `kid`s must not turn into a flood of JWKS calls.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// How long fetched keys are trusted before the JWKS is asked again.
pub const JWKS_TTL: Duration = Duration::from_secs(5 * 60);

/// The verification keys of the last JWKS fetch.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

impl Keys {
    /// The key for `kid`, if the keys are younger than [`JWKS_TTL`].
    fn fresh(&self, kid: &str) -> Option<DecodingKey> {
        self.fetched_at
            .filter(|at| at.elapsed() < JWKS_TTL)
            .and_then(|_| self.by_kid.get(kid).cloned())
    }
}

/// Verifies access tokens; cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    source: Box<dyn JwksSource>,
    keys: RwLock<Keys>,
    last_fetch: Mutex<Option<Instant>>,
    validation: Validation,
    /// Tokens that verified, with their claims; see [`VERIFIED_TTL`].
    verified: moka::future::Cache<String, Arc<Claims>>,
    revocations: Revocations,
}

/// How far past `exp` a token still verifies, for clocks that disagree.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// How long a request waits for a starting replica's first revocation snapshot.
const LOAD_PATIENCE: Duration = Duration::from_secs(2);

/// How long a verified token is remembered. It bounds how long a token signed by
/// a key that has since left the JWKS keeps working on a replica.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

impl TokenVerifier {
    pub fn new(
        source: impl JwksSource,
        issuer: &str,
        audience: &str,
        revocations: Revocations,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        Self {
            inner: Arc::new(Inner {
                source: Box::new(source),
                keys: RwLock::new(Keys::default()),
                last_fetch: Mutex::new(None),
                validation,
                verified: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(VERIFIED_TTL)
                    .build(),
                revocations,
            }),
        }
    }

    /// Checks a raw JWT.
    pub async fn verify(&self, token: &str) -> Result<Principal, Status> {
        let claims = match self.inner.verified.get(token).await {
            // The same expiry rule as a full check, leeway included.
            Some(claims) if claims.exp + self.leeway() > unix_now() => claims,
            Some(_) => return Err(Status::unauthenticated("token expired")),
            None => {
                let claims = Arc::new(self.check(token).await?);
                self.inner
                    .verified
                    .insert(token.to_owned(), claims.clone())
                    .await;
                claims
            }
        };
        let revocations = &self.inner.revocations;
        if !revocations.loaded(LOAD_PATIENCE).await {
            return Err(Status::unavailable(
                "cannot verify tokens right now: revocations not loaded",
            ));
        }
        if revocations.is_revoked(&claims.sid) {
            return Err(Status::unauthenticated(
                "the session has ended: sign in again",
            ));
        }
        Ok(Principal {
            user_id: claims.sub.clone(),
            session_id: claims.sid.clone(),
            role: revocations.current_role(&claims.sub).unwrap_or(claims.role),
            token: token.to_owned(),
        })
    }

    /// The revocations this verifier holds tokens against.
    pub fn revocations(&self) -> &Revocations {
        &self.inner.revocations
    }

    fn leeway(&self) -> i64 {
        i64::try_from(self.inner.validation.leeway).unwrap_or(0)
    }

    /// The signature, issuer, audience and expiry of a token not seen before.
    async fn check(&self, token: &str) -> Result<Claims, Status> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Status::unauthenticated("malformed token"))?;
        let kid = header
            .kid
            .ok_or_else(|| Status::unauthenticated("token has no key id"))?;
        let key = self.key(&kid).await?;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation).map_err(|err| {
                match err.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        Status::unauthenticated("token expired")
                    }
                    _ => Status::unauthenticated("invalid token"),
                }
            })?;
        // jsonwebtoken does not look at `iat`: a token from the future is forged
        // or from a signer whose clock is wrong, either way not to be trusted.
        if data.claims.iat > unix_now() + self.leeway() {
            return Err(Status::unauthenticated("invalid token"));
        }
        Ok(data.claims)
    }

    /// The caller, when the request carries a token; an absent header is anonymous,
    /// a bad one is an error.
    pub async fn authenticate<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Option<Principal>, Status> {
        match bearer(request.metadata())? {
            None => Ok(None),
            Some(token) => self.verify(token).await.map(Some),
        }
    }

    /// The caller; UNAUTHENTICATED without a valid token.
    pub async fn require<T>(&self, request: &tonic::Request<T>) -> Result<Principal, Status> {
        self.authenticate(request)
            .await?
            .ok_or_else(|| Status::unauthenticated("sign in first: missing authorization token"))
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, Status> {
        if let Some(key) = self.inner.keys.read().await.fresh(kid) {
            return Ok(key);
        }
        let mut last = self.inner.last_fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        if let Some(key) = self.inner.keys.read().await.fresh(kid) {
            return Ok(key);
        }
        // What the last fetch said, however old: used only when asking again is
        // not allowed yet or fails, so an unreachable auth service does not stop
        // every replica from verifying.
        let known = self.inner.keys.read().await.by_kid.get(kid).cloned();
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL) {
            return known.ok_or_else(|| Status::unauthenticated("invalid token"));
        }
        *last = Some(Instant::now());
        let fetched = match self.inner.source.fetch().await {
            Ok(fetched) => fetched,
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "fetching signing keys failed");
                return known.ok_or_else(|| Status::unavailable("cannot verify tokens right now"));
            }
        };
        let mut by_kid = HashMap::new();
        for k in fetched {
            match DecodingKey::from_ed_components(&k.x) {
                Ok(key) => {
                    by_kid.insert(k.kid, key);
                }
                Err(err) => tracing::warn!(kid = %k.kid, %err, "skipping unusable public key"),
            }
        }
        let found = by_kid.get(kid).cloned();
        *self.inner.keys.write().await = Keys {
            by_kid,
            fetched_at: Some(Instant::now()),
        };
        found.ok_or_else(|| Status::unauthenticated("invalid token"))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The token in `authorization: Bearer <jwt>` or Conduit's `Token <jwt>`.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| Status::unauthenticated("malformed authorization header"))?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")) {
        return Err(Status::unauthenticated(
            "authorization must be `Token <jwt>` or `Bearer <jwt>`",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Status::unauthenticated("malformed authorization header"));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn with_auth(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn both_token_schemes_are_accepted() {
        assert_eq!(bearer(&with_auth("Token abc")).unwrap(), Some("abc"));
        assert_eq!(bearer(&with_auth("Bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer(&with_auth("bearer  abc ")).unwrap(), Some("abc"));
        assert_eq!(bearer(&MetadataMap::new()).unwrap(), None);
    }

    #[test]
    fn other_schemes_and_shapes_are_unauthenticated() {
        for bad in ["Basic abc", "abc", "Token ", "Token"] {
            let err = bearer(&with_auth(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
    }

    /// The JWKS the tests publish; they may change it.
    #[derive(Clone, Default)]
    struct Published(Arc<std::sync::Mutex<Vec<PublicKey>>>);

    impl JwksSource for Published {
        fn fetch(
            &self,
        ) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<PublicKey>>> + Send + '_>> {
            let keys = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(keys) })
        }
    }

    /// A verifier trusting key `k1`, what it fetches from, and a way to sign.
    fn setup() -> (TokenVerifier, Published, jsonwebtoken::EncodingKey) {
        use base64::Engine as _;
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signing.verifying_key().to_bytes());
        let pem = signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
        let published = Published::default();
        published.0.lock().unwrap().push(PublicKey {
            kid: "k1".into(),
            x,
        });
        let revocations = Revocations::new(Duration::from_secs(600));
        revocations.apply_snapshot(&Default::default());
        let verifier = TokenVerifier::new(published.clone(), "agora", "agora", revocations);
        (verifier, published, key)
    }

    /// A token signed with `key` as `k1`, its claims adjusted.
    fn token(key: &jsonwebtoken::EncodingKey, adjust: impl FnOnce(&mut Claims)) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let now = unix_now();
        let mut claims = Claims {
            sub: "u1".into(),
            sid: "s1".into(),
            role: Role::User,
            iss: "agora".into(),
            aud: "agora".into(),
            iat: now,
            exp: now + 600,
        };
        adjust(&mut claims);
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn signed(exp_in: i64) -> (TokenVerifier, String) {
        let (verifier, _, key) = setup();
        let token = token(&key, |c| c.exp = c.iat + exp_in);
        (verifier, token)
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_removed_from_the_jwks_stops_verifying_once_the_cache_expires() {
        let (verifier, published, key) = setup();
        assert!(verifier.verify(&token(&key, |_| {})).await.is_ok());

        published.0.lock().unwrap().clear();
        let before = verifier.verify(&token(&key, |c| c.sub = "u2".into())).await;
        tokio::time::advance(JWKS_TTL + Duration::from_secs(1)).await;
        let after = verifier.verify(&token(&key, |c| c.sub = "u3".into())).await;

        assert!(before.is_ok(), "still within the cache's lifetime");
        assert_eq!(after.unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn a_token_issued_in_the_future_is_refused() {
        let (verifier, _, key) = setup();
        let future = token(&key, |c| {
            c.iat += 3600;
            c.exp += 3600;
        });
        assert!(verifier.verify(&future).await.is_err());
    }

    #[tokio::test]
    async fn a_remembered_token_answers_alike_and_still_expires() {
        let (verifier, token) = signed(600);
        let first = verifier.verify(&token).await.unwrap();
        let again = verifier.verify(&token).await.unwrap();
        assert_eq!((first.user_id, first.role), (again.user_id, again.role));

        // The same token, remembered with an expiry long past.
        let mut claims = (*verifier.inner.verified.get(&token).await.unwrap()).clone();
        claims.exp = unix_now() - 3600;
        verifier
            .inner
            .verified
            .insert(token.clone(), Arc::new(claims))
            .await;
        let err = verifier.verify(&token).await.unwrap_err();
        assert_eq!(err.message(), "token expired");
    }

    #[tokio::test]
    async fn a_token_that_fails_is_never_remembered() {
        let (verifier, token) = signed(600);
        // One signature character changed, well inside the signature.
        let at = token.len() - 10;
        let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
        for _ in 0..2 {
            let err = verifier.verify(&forged).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
        }
        assert!(verifier.inner.verified.get(&forged).await.is_none());
    }

    #[tokio::test]
    async fn a_remembered_token_of_a_revoked_session_is_refused_and_roles_follow_changes() {
        let (verifier, token) = signed(600);
        assert_eq!(verifier.verify(&token).await.unwrap().role, Role::User);

        let now = crate::db::now_micros();
        verifier
            .revocations()
            .role_changed("u1", Role::Moderator, now);
        assert_eq!(verifier.verify(&token).await.unwrap().role, Role::Moderator);

        verifier.revocations().revoke_sessions(["s1"], now);
        let err = verifier.verify(&token).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn roles_map_to_the_contract_and_back() {
        for role in [Role::User, Role::Moderator, Role::Admin] {
            assert_eq!(Role::from_pb(role.to_pb() as i32), Some(role));
        }
        assert_eq!(Role::from_pb(0), None);
        assert_eq!(Role::from_pb(42), None);
    }

    #[test]
    fn roles_order_by_power() {
        assert!(Role::Admin > Role::Moderator && Role::Moderator > Role::User);
        assert_eq!(Role::parse("ADMIN"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
