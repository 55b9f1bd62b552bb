//! Database pools and per-service migrations.
//!
//! Services talk to the database through sqlx's `Any` driver, so one store serves
//! both backends: SQLite files for the embedded default and PostgreSQL in
//! production, one schema per service. The SQL they share keeps to what both
//! understand (`$n` placeholders, TEXT ids, BIGINT microsecond timestamps); the
//! schemas themselves live in one migration folder per backend.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, SqlSafeStr};

use crate::config::{DatabaseTarget, ServiceName};

/// Which engine is behind a pool, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One migration: version, description, SQL.
pub type MigrationScript = (i64, &'static str, &'static str);

/// A service's schema history, written once per backend.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub sqlite: &'static [MigrationScript],
    pub postgres: &'static [MigrationScript],
}

/// A service's database: a pool and the backend it talks to.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Opens the service's database, creating the SQLite file or the PostgreSQL
    /// schema (`agora_<service>`) when missing.
    pub async fn connect(target: &DatabaseTarget, service: ServiceName) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        match target {
            DatabaseTarget::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let options: AnyConnectOptions = url.parse()?;
                // One connection: SQLite has a single writer, and a second
                // connection upgrading a read transaction to a write one fails with
                // SQLITE_BUSY instead of waiting. Serialising keeps every write safe.
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(sqlx::raw_sql(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                            ))
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?;
                Ok(Self {
                    pool,
                    backend: Backend::Sqlite,
                })
            }
            DatabaseTarget::Postgres(url) => {
                let schema = schema_name(service);
                let options: AnyConnectOptions = url.expose().parse()?;
                create_schema(&options, &schema).await?;
                let set_path = format!("SET search_path TO {schema}");
                let pool = AnyPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(move |conn, _| {
                        let set_path = set_path.clone();
                        Box::pin(async move {
                            conn.execute(sqlx::AssertSqlSafe(set_path)).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?;
                Ok(Self {
                    pool,
                    backend: Backend::Postgres,
                })
            }
        }
    }

    /// Applies the migrations this database has not seen yet. Safe to run from
    /// several replicas at once: sqlx takes an advisory lock on PostgreSQL.
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        let scripts = match self.backend {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        let migrator = Migrator {
            migrations: Cow::Owned(
                scripts
                    .iter()
                    .map(|(version, description, sql)| {
                        Migration::new(
                            *version,
                            Cow::Borrowed(*description),
                            MigrationType::Simple,
                            sql.into_sql_str(),
                            false,
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// True while the database answers; readiness follows it.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// `agora_<service>`: the PostgreSQL schema a service owns.
pub fn schema_name(service: ServiceName) -> String {
    format!("agora_{}", service.as_str())
}

async fn create_schema(options: &AnyConnectOptions, schema: &str) -> anyhow::Result<()> {
    use sqlx::ConnectOptions;
    let mut conn = options.connect().await?;
    let sql = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    // Replicas starting together may race on the catalog; the loser's error is
    // harmless once the schema exists.
    if let Err(err) = conn.execute(sqlx::AssertSqlSafe(sql.clone())).await {
        conn.execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|_| err)?;
    }
    Ok(())
}

/// When `err` is a unique-constraint violation, the constraint (PostgreSQL) or the
/// column list (SQLite) it names, so callers can turn it into a field error.
pub fn unique_violation(err: &sqlx::Error) -> Option<String> {
    let db = err.as_database_error()?;
    if !matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation) {
        return None;
    }
    Some(
        db.constraint()
            .map(str::to_owned)
            .unwrap_or_else(|| db.message().to_owned()),
    )
}

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000) as i64
}

/// A stored timestamp as a protobuf `Timestamp`.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A protobuf `Timestamp` as stored: microseconds since the epoch.
pub fn micros_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos / 1_000))
}

/// `$first, $first+1, …` for an `IN` list of `count` values.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first column of every row of `sql`, whose `IN` list is written `{ids}`:
/// `leading` values are bound first (`$1`, …), then one placeholder per id.
/// Nothing is queried for no ids.
pub async fn strings_in(
    pool: &AnyPool,
    sql: &str,
    leading: &[&str],
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = sql.replace("{ids}", &placeholders(leading.len() + 1, ids.len()));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in leading {
        query = query.bind(*value);
    }
    for id in ids {
        query = query.bind(id);
    }
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| sqlx::Row::try_get(row, 0))
        .collect()
}
