//! The auth service: agora's token authority. It registers and signs users in
//! (through the user service, which owns credentials), issues EdDSA-signed JWT
//! access tokens and opaque rotating refresh tokens, tracks sessions, throttles
//! failed sign-ins and publishes its public keys as a JWKS.

pub mod api;
pub mod events;
pub mod keys;
pub mod store;
pub mod throttle;
pub mod tokens;

use agora_kit::db::{Db, Migrations};

pub use api::{AuthApi, AuthInternalApi};
pub use keys::KeyRing;

/// The auth service's schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        (
            1,
            "session",
            include_str!("../migrations/sqlite/0001_session.sql"),
        ),
        (
            2,
            "revocation",
            include_str!("../migrations/sqlite/0002_revocation.sql"),
        ),
        (
            3,
            "session_limits",
            include_str!("../migrations/sqlite/0003_session_limits.sql"),
        ),
        (
            4,
            "login_failure",
            include_str!("../migrations/sqlite/0004_login_failure.sql"),
        ),
    ],
    postgres: &[
        (
            1,
            "session",
            include_str!("../migrations/postgres/0001_session.sql"),
        ),
        (
            2,
            "revocation",
            include_str!("../migrations/postgres/0002_revocation.sql"),
        ),
        (
            3,
            "session_limits",
            include_str!("../migrations/postgres/0003_session_limits.sql"),
        ),
        (
            4,
            "login_failure",
            include_str!("../migrations/postgres/0004_login_failure.sql"),
        ),
    ],
};

/// Opens and migrates the auth database.
pub async fn open_db(target: &agora_kit::config::DatabaseTarget) -> anyhow::Result<Db> {
    let db = Db::connect(target, agora_kit::ServiceName::Auth).await?;
    db.migrate(&MIGRATIONS).await?;
    Ok(db)
}

/// A migrated auth database in a fresh SQLite file, for unit tests.
#[cfg(test)]
pub(crate) async fn test_db() -> Db {
    let path = std::env::temp_dir()
        .join(format!("agora-auth-{}", uuid::Uuid::now_v7()))
        .join("auth.db");
    open_db(&agora_kit::config::DatabaseTarget::Sqlite(path))
        .await
        .expect("a test database")
}
