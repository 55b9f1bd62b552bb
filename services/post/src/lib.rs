//! The post service: articles, their tags, favorites and comments, the feed, and
//! live comment rooms. Authors are user-service accounts, shown from the service's
//! own projection of profiles and follows (`authors`), kept by user events.

pub mod api;
pub mod authors;
pub mod cache;
pub mod domain;
pub mod events;
pub mod live;
pub mod store;

use agora_kit::db::{Db, Migrations};

pub use api::PostApi;

/// The post service's schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        (
            1,
            "article",
            include_str!("../migrations/sqlite/0001_article.sql"),
        ),
        (
            2,
            "outbox",
            include_str!("../migrations/sqlite/0002_outbox.sql"),
        ),
        (
            3,
            "article_count",
            include_str!("../migrations/sqlite/0003_article_count.sql"),
        ),
        (
            4,
            "inbox",
            include_str!("../migrations/sqlite/0004_inbox.sql"),
        ),
        (
            5,
            "profile_projection",
            include_str!("../migrations/sqlite/0005_profile_projection.sql"),
        ),
    ],
    postgres: &[
        (
            1,
            "article",
            include_str!("../migrations/postgres/0001_article.sql"),
        ),
        (
            2,
            "outbox",
            include_str!("../migrations/postgres/0002_outbox.sql"),
        ),
        (
            3,
            "article_count",
            include_str!("../migrations/postgres/0003_article_count.sql"),
        ),
        (
            4,
            "inbox",
            include_str!("../migrations/postgres/0004_inbox.sql"),
        ),
        (
            5,
            "profile_projection",
            include_str!("../migrations/postgres/0005_profile_projection.sql"),
        ),
    ],
};

/// Opens and migrates the post database.
pub async fn open_db(target: &agora_kit::config::DatabaseTarget) -> anyhow::Result<Db> {
    let db = Db::connect(target, agora_kit::ServiceName::Post).await?;
    db.migrate(&MIGRATIONS).await?;
    Ok(db)
}
