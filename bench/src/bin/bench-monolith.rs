//! The monolith floor: what a platform engineer would write instead of agora's
//! services and gateway for the three hottest reads — one axum handler per route,
//! one SQL query per request, straight against agora's own PostgreSQL tables
//! (`agora_post.article`, `article_tag`, `favorite`, `article_count`;
//! `agora_user.account`, `follow`) as `agora seed` leaves them.
//!
//! It is a reference point for `scripts/bench.sh`, not a product: no caches, no
//! rate limits, no tracing, no metrics. It answers with the same Conduit JSON as
//! agora (same fields, same order, timestamps with milliseconds) for
//!
//! - `GET /api/articles/{slug}`
//! - `GET /api/articles?limit=&offset=` (`articlesCount` from agora's kept count)
//! - `GET /api/user`
//!
//! and verifies agora's access tokens (EdDSA JWTs, `Authorization: Token …` or
//! `Bearer …`) itself, with the public half of the Ed25519 key agora signs with
//! (`$AGORA_AUTH_KEYS_DIR/k1.pem`); the token's `sub` is the account id.
//!
//! ```sh
//! AGORA_DATABASE_URL=postgres://postgres@127.0.0.1:5432/agora \
//! AGORA_AUTH_KEYS_DIR=/etc/agora/keys bench-monolith 127.0.0.1:18090
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

#[derive(Debug, Parser)]
#[command(about = "A minimal axum + sqlx Conduit reader over agora's PostgreSQL tables")]
struct Args {
    /// Where to listen.
    #[arg(env = "AGORA_BENCH_MONOLITH_ADDR", default_value = "127.0.0.1:18090")]
    addr: SocketAddr,
    /// agora's PostgreSQL database (after `agora seed`).
    #[arg(long, env = "AGORA_DATABASE_URL")]
    database_url: String,
    /// Directory holding agora's signing key `k1.pem`.
    #[arg(long, env = "AGORA_AUTH_KEYS_DIR")]
    keys_dir: PathBuf,
    #[arg(long, env = "AGORA_JWT_ISSUER", default_value = "agora")]
    issuer: String,
    #[arg(long, env = "AGORA_JWT_AUDIENCE", default_value = "agora")]
    audience: String,
    /// Database connections (agora's PostgreSQL pools hold 10 per service).
    #[arg(long, default_value_t = 10)]
    pool: u32,
}

struct App {
    db: PgPool,
    key: DecodingKey,
    validation: Validation,
}

type Shared = State<Arc<App>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = PgPoolOptions::new()
        .max_connections(args.pool)
        .connect(&args.database_url)
        .await?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&args.issuer]);
    validation.set_audience(&[&args.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 30;
    let app = Arc::new(App {
        db,
        key: public_key(&args.keys_dir.join("k1.pem"))?,
        validation,
    });
    let router = axum::Router::new()
        .route("/api/articles", get(list_articles))
        .route("/api/articles/{slug}", get(get_article))
        .route("/api/user", get(current_user))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("bench-monolith listening on {}", args.addr);
    axum::serve(listener, router).await?;
    Ok(())
}

/// The verifying key of an Ed25519 PEM: a public key as is, a PKCS#8 private key
/// (what agora keeps) through its public half.
fn public_key(path: &std::path::Path) -> anyhow::Result<DecodingKey> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    if let Ok(key) = DecodingKey::from_ed_pem(pem.as_bytes()) {
        return Ok(key);
    }
    let private = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{} is no Ed25519 key: {e}", path.display()))?;
    Ok(DecodingKey::from_ed_der(private.verifying_key().as_bytes()))
}

// ---- JSON, in the field order agora renders ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Article {
    slug: String,
    title: String,
    description: String,
    body: String,
    tag_list: Vec<String>,
    created_at: String,
    updated_at: String,
    favorited: bool,
    favorites_count: i64,
    author: Author,
    published: bool,
}

#[derive(Serialize)]
struct Author {
    username: String,
    bio: Option<String>,
    image: Option<String>,
    following: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArticleList {
    articles: Vec<Article>,
    articles_count: i64,
}

// ---- SQL: one statement per request; $viewer is NULL when anonymous ----

/// Everything an article shows, for viewer `$1`; `a` is the article, `u` its author.
const ARTICLE_SELECT: &str = "\
    SELECT a.slug, a.title, a.description, a.body, \
      ARRAY(SELECT t.tag FROM agora_post.article_tag t WHERE t.article_id = a.id ORDER BY t.tag) AS tags, \
      a.created_at, a.updated_at, \
      EXISTS(SELECT 1 FROM agora_post.favorite f WHERE f.article_id = a.id AND f.user_id = $1) AS favorited, \
      (SELECT COUNT(*) FROM agora_post.favorite f WHERE f.article_id = a.id) AS favorites_count, \
      u.username, u.bio, u.image, \
      EXISTS(SELECT 1 FROM agora_user.follow w WHERE w.follower_id = $1 AND w.followee_id = a.author_id) AS following, \
      a.published = 1 AS published";

/// One article by slug (`$2`); drafts only for their author.
static ARTICLE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{ARTICLE_SELECT} FROM agora_post.article a JOIN agora_user.account u ON u.id = a.author_id \
         WHERE a.slug = $2 AND (a.published = 1 OR a.author_id = $1)"
    )
});

/// A page (`LIMIT $2 OFFSET $3`) of published articles, newest first, each row
/// carrying the total from the count agora keeps.
static LIST_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{ARTICLE_SELECT}, (SELECT n FROM agora_post.article_count WHERE scope = '') AS total \
         FROM agora_post.article a JOIN agora_user.account u ON u.id = a.author_id \
         WHERE a.published = 1 ORDER BY a.created_at DESC, a.id DESC LIMIT $2 OFFSET $3"
    )
});

const USER_SQL: &str =
    "SELECT email, username, bio, image, role FROM agora_user.account WHERE id = $1";

fn article(row: &PgRow) -> sqlx::Result<Article> {
    Ok(Article {
        slug: row.try_get("slug")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        body: row.try_get("body")?,
        tag_list: row.try_get("tags")?,
        created_at: timestamp(row.try_get("created_at")?),
        updated_at: timestamp(row.try_get("updated_at")?),
        favorited: row.try_get("favorited")?,
        favorites_count: row.try_get("favorites_count")?,
        author: Author {
            username: row.try_get("username")?,
            bio: row.try_get("bio")?,
            image: row.try_get("image")?,
            following: row.try_get("following")?,
        },
        published: row.try_get("published")?,
    })
}

/// Microseconds since the epoch as `2024-01-02T03:04:05.123Z`.
fn timestamp(micros: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

// ---- handlers ----

async fn get_article(
    State(app): Shared,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Response, Error> {
    let viewer = app.viewer(&headers)?;
    let row = sqlx::query(ARTICLE_SQL.as_str())
        .bind(viewer.as_deref())
        .bind(&slug)
        .fetch_optional(&app.db)
        .await?
        .ok_or(Error::NotFound("article"))?;
    Ok(Json(json!({ "article": article(&row)? })).into_response())
}

#[derive(Deserialize)]
struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list_articles(
    State(app): Shared,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Result<Response, Error> {
    let viewer = app.viewer(&headers)?;
    let limit = page.limit.unwrap_or(20).clamp(1, 100);
    let offset = page.offset.unwrap_or(0).max(0);
    let rows = sqlx::query(LIST_SQL.as_str())
        .bind(viewer.as_deref())
        .bind(limit)
        .bind(offset)
        .fetch_all(&app.db)
        .await?;
    let articles_count = match rows.first() {
        Some(row) => row.try_get::<Option<i64>, _>("total")?.unwrap_or(0),
        None => 0,
    };
    let articles = rows.iter().map(article).collect::<sqlx::Result<_>>()?;
    Ok(Json(ArticleList {
        articles,
        articles_count,
    })
    .into_response())
}

async fn current_user(State(app): Shared, headers: HeaderMap) -> Result<Response, Error> {
    let (user_id, token) = app.token(&headers)?.ok_or(Error::Unauthorized)?;
    let row = sqlx::query(USER_SQL)
        .bind(&user_id)
        .fetch_optional(&app.db)
        .await?
        .ok_or(Error::Unauthorized)?;
    let role = match row.try_get::<String, _>("role")?.as_str() {
        "admin" => "ROLE_ADMIN",
        "moderator" => "ROLE_MODERATOR",
        _ => "ROLE_USER",
    };
    Ok(Json(json!({ "user": {
        "email": row.try_get::<String, _>("email")?,
        "token": token,
        "username": row.try_get::<String, _>("username")?,
        "bio": row.try_get::<Option<String>, _>("bio")?,
        "image": row.try_get::<Option<String>, _>("image")?,
        "role": role,
    }}))
    .into_response())
}

// ---- authentication ----

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl App {
    /// The signed-in account's id, `None` when anonymous; a bad token is an error.
    fn viewer(&self, headers: &HeaderMap) -> Result<Option<String>, Error> {
        Ok(self.token(headers)?.map(|(user_id, _)| user_id))
    }

    /// `(account id, raw token)` of a valid `Authorization` header.
    fn token(&self, headers: &HeaderMap) -> Result<Option<(String, String)>, Error> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| Error::Unauthorized)?;
        let token = value
            .strip_prefix("Token ")
            .or_else(|| value.strip_prefix("Bearer "))
            .ok_or(Error::Unauthorized)?
            .trim();
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| Error::Unauthorized)?;
        Ok(Some((data.claims.sub, token.to_owned())))
    }
}

// ---- errors, in Conduit's shape ----

enum Error {
    Unauthorized,
    NotFound(&'static str),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Db(err)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, key, message) = match self {
            Error::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "token",
                "is missing or invalid".to_owned(),
            ),
            Error::NotFound(what) => (StatusCode::NOT_FOUND, what, "not found".to_owned()),
            Error::Db(err) => {
                eprintln!("database error: {err}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "body",
                    "database error".to_owned(),
                )
            }
        };
        (status, Json(json!({ "errors": { key: [message] } }))).into_response()
    }
}
