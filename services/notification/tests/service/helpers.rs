//! `TestService`: the notification service's parts on a fresh database (a SQLite
//! file in a temporary folder, or a new PostgreSQL database when
//! `AGORA_TEST_DATABASE_URL` is set), tokens minted with a test key, and one
//! helper per event the service consumes.

use std::pin::Pin;
use std::sync::Arc;

use agora_kit::config::{DatabaseTarget, Secret};
use agora_kit::db::Db;
use agora_kit::events::{self, Envelope, HandleError, types};
use agora_kit::token::{JwksSource, PublicKey, TokenVerifier};
use agora_notification::api::NotificationApi;
use agora_notification::events::EventHandler;
use agora_notification::live::Hub;
use agora_notification::store::Store;
use agora_proto::events::v1 as ev;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use prost::Message;
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// PostgreSQL admin URL for tests, when the machine has one.
pub fn postgres_url() -> Option<String> {
    std::env::var("AGORA_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

const KID: &str = "test-key";
const ISSUER: &str = "agora";
const AUDIENCE: &str = "agora";

/// The test key's public half, as the auth service would serve it.
struct TestJwks(String);

impl JwksSource for TestJwks {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<PublicKey>>> + Send + '_>> {
        let key = PublicKey {
            kid: KID.into(),
            x: self.0.clone(),
        };
        Box::pin(async move { Ok(vec![key]) })
    }
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// A verifier that trusts the test key.
pub fn verifier() -> TokenVerifier {
    let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().to_bytes());
    let revocations = agora_kit::revocation::Revocations::new(std::time::Duration::from_secs(600));
    revocations.apply_snapshot(&Default::default());
    TokenVerifier::new(TestJwks(x), ISSUER, AUDIENCE, revocations)
}

/// An access token for `user_id`, signed with the test key.
pub fn token(user_id: &str) -> String {
    let pem = signing_key().to_pkcs8_pem(LineEnding::LF).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(KID.into());
    let now = jiff::Timestamp::now().as_second();
    let claims = serde_json::json!({
        "sub": user_id, "sid": "session", "role": "user",
        "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600,
    });
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// A request from `user_id`.
pub fn request<T>(user_id: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token(user_id)).parse().unwrap(),
    );
    request
}

async fn fresh_postgres_database() -> String {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let admin = postgres_url().expect("AGORA_TEST_DATABASE_URL is set");
    let name = format!("agora_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create a test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// Opens a fresh, migrated notification database.
pub async fn fresh_db(backend: Backend, dir: &std::path::Path) -> Db {
    let target = match backend {
        Backend::Sqlite => DatabaseTarget::Sqlite(dir.join("notification.db")),
        Backend::Postgres => DatabaseTarget::Postgres(Secret::new(fresh_postgres_database().await)),
    };
    agora_notification::open_db(&target).await.unwrap()
}

/// The service's parts on one fresh database, no background task running: tests
/// drive the handler, the API and the workers themselves.
pub struct TestService {
    pub db: Db,
    pub handler: EventHandler,
    pub api: NotificationApi,
    pub hub: Hub,
    pub shutdown: CancellationToken,
    /// What the handler pokes after committing outbox rows.
    pub relay_wake: Arc<Notify>,
    /// Holds the SQLite file until the test ends.
    _dir: tempfile::TempDir,
}

impl TestService {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = fresh_db(backend, dir.path()).await;
        let email_wake = Arc::new(Notify::new());
        let relay_wake = Arc::new(Notify::new());
        let hub = Hub::default();
        let shutdown = CancellationToken::new();
        Self {
            handler: EventHandler::new(db.clone(), email_wake, relay_wake.clone()),
            api: NotificationApi::new(
                Store::new(db.clone()),
                verifier(),
                hub.clone(),
                shutdown.clone(),
            ),
            db,
            hub,
            shutdown,
            relay_wake,
            _dir: dir,
        }
    }

    /// Delivers one envelope as the bus would.
    pub async fn deliver(&self, envelope: &Envelope) -> Result<(), HandleError> {
        self.handler.apply(envelope).await
    }

    async fn send<M: Message + prost::Name>(&self, event_type: &str, payload: &M) -> Envelope {
        let envelope = events::envelope(event_type, "test", payload);
        self.deliver(&envelope).await.unwrap();
        envelope
    }

    /// `user.registered` for `<name>@example.com`; the user id is `name`'s.
    pub async fn register(&self, name: &str) {
        self.send(
            types::USER_REGISTERED,
            &ev::UserRegistered {
                user_id: user_id(name),
                username: name.into(),
                email: format!("{name}@example.com"),
            },
        )
        .await;
    }

    pub async fn follow(&self, follower: &str, followee: &str) -> Envelope {
        self.send(
            types::USER_FOLLOWED,
            &ev::UserFollowed {
                follower_id: user_id(follower),
                followee_id: user_id(followee),
            },
        )
        .await
    }

    pub async fn publish(&self, author: &str, slug: &str) -> Envelope {
        self.send(
            types::ARTICLE_PUBLISHED,
            &ev::ArticlePublished {
                article_id: format!("article-{slug}"),
                slug: slug.into(),
                title: format!("Title of {slug}"),
                author_id: user_id(author),
            },
        )
        .await
    }

    pub async fn comment(&self, commenter: &str, author: &str, slug: &str) -> Envelope {
        self.send(
            types::COMMENT_ADDED,
            &ev::CommentAdded {
                comment_id: 1,
                article_id: format!("article-{slug}"),
                slug: slug.into(),
                title: format!("Title of {slug}"),
                author_id: user_id(commenter),
                article_author_id: user_id(author),
                body: "Nice".into(),
                created_at: None,
            },
        )
        .await
    }

    pub async fn favorite(&self, fan: &str, author: &str, slug: &str) -> Envelope {
        self.send(
            types::ARTICLE_FAVORITED,
            &ev::ArticleFavorited {
                article_id: format!("article-{slug}"),
                slug: slug.into(),
                title: format!("Title of {slug}"),
                user_id: user_id(fan),
                article_author_id: user_id(author),
            },
        )
        .await
    }

    /// `(kind, actor_username, text)` of `name`'s notifications, oldest first.
    pub async fn notifications_of(&self, name: &str) -> Vec<(String, String, String)> {
        sqlx::query(
            "SELECT kind, actor_username, text FROM notification WHERE user_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(user_id(name))
        .fetch_all(self.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    }

    /// Ids of `name`'s notifications, oldest first.
    pub async fn notification_ids(&self, name: &str) -> Vec<String> {
        sqlx::query("SELECT id FROM notification WHERE user_id = $1 ORDER BY id")
            .bind(user_id(name))
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// `name`'s email jobs: `(kind, subject, status, attempts, next_attempt_at)`.
    pub async fn emails_of(&self, name: &str) -> Vec<EmailJob> {
        sqlx::query(
            "SELECT id, kind, subject, body, status, attempts, next_attempt_at, last_error \
             FROM email_job WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user_id(name))
        .fetch_all(self.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| EmailJob {
            id: r.get(0),
            kind: r.get(1),
            subject: r.get(2),
            body: r.get(3),
            status: r.get(4),
            attempts: r.get(5),
            next_attempt_at: r.get(6),
            last_error: r.get(7),
        })
        .collect()
    }

    /// The `notification.created` envelopes in the outbox, oldest first.
    pub async fn announced(&self) -> Vec<Envelope> {
        sqlx::query("SELECT type, envelope FROM outbox ORDER BY created_at, id")
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r.get::<String, _>(0), types::NOTIFICATION_CREATED);
                Envelope::decode(r.get::<Vec<u8>, _>(1).as_slice()).unwrap()
            })
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(self.db.pool())
            .await
            .unwrap()
            .get(0)
    }
}

/// One row of `email_job`.
#[derive(Debug, Clone)]
pub struct EmailJob {
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// A stable account id per test user name.
pub fn user_id(name: &str) -> String {
    format!("user-{name}")
}

/// Runs each test body once on SQLite and once on PostgreSQL (when configured).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::TestService::new($crate::helpers::Backend::Sqlite).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::helpers::postgres_url().is_none() {
                        eprintln!("AGORA_TEST_DATABASE_URL not set: PostgreSQL case skipped");
                        return;
                    }
                    super::$name($crate::helpers::TestService::new($crate::helpers::Backend::Postgres).await).await;
                }
            )*
        }
    };
}
