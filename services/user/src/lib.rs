//! The user service: identity. It owns accounts (email, username, argon2id
//! password hash, bio, image, role) and follows, serves `agora.user.v1.UserService`
//! to clients and `UserInternalService` to the other agora services.
//!
//! A password hash never leaves this crate: not in a response, an event or a log.

pub mod api;
pub mod domain;
pub mod password;
pub mod store;

use agora_kit::db::{Db, Migrations};

pub use api::{UserApi, UserInternalApi};

/// The user service's schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        (
            1,
            "account",
            include_str!("../migrations/sqlite/0001_account.sql"),
        ),
        (
            2,
            "outbox",
            include_str!("../migrations/sqlite/0002_outbox.sql"),
        ),
    ],
    postgres: &[
        (
            1,
            "account",
            include_str!("../migrations/postgres/0001_account.sql"),
        ),
        (
            2,
            "outbox",
            include_str!("../migrations/postgres/0002_outbox.sql"),
        ),
    ],
};

/// Opens and migrates the user database.
pub async fn open_db(target: &agora_kit::config::DatabaseTarget) -> anyhow::Result<Db> {
    let db = Db::connect(target, agora_kit::ServiceName::User).await?;
    db.migrate(&MIGRATIONS).await?;
    Ok(db)
}
