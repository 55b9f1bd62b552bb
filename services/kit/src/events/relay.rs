//! The outbox relay: publishes a service's committed events and marks them sent.
//!
//! It wakes when a write commits (the store pokes its [`Wake`]) and also sweeps on
//! a timer, so an event committed just before a crash, or while the bus was down,
//! still goes out. On PostgreSQL rows are claimed with `FOR UPDATE SKIP LOCKED`, so
//! several replicas relay the same outbox without publishing a row twice at once
//! (a crash between publish and mark can still repeat one: consumers dedupe).

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Bus, Envelope};
use crate::db::{Backend, Db, now_micros};

/// Pokes the relay right after a commit that wrote outbox rows.
pub type Wake = Arc<Notify>;

/// How many rows one round publishes.
const BATCH: i64 = 200;
/// The safety-net sweep.
const SWEEP: Duration = Duration::from_secs(1);
/// Sent rows are kept this long for inspection, then deleted.
const KEEP_SENT: Duration = Duration::from_secs(24 * 3600);

/// Relays the outbox of `service` (in `db`) to `bus` until `shutdown`.
pub async fn run(
    service: &'static str,
    db: Db,
    bus: Arc<dyn Bus>,
    wake: Wake,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let mut rounds: u64 = 0;
    loop {
        match relay_once(service, &db, bus.as_ref()).await {
            Ok(sent) if sent as i64 == BATCH => continue,
            Ok(_) => backoff = Duration::from_millis(200),
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "outbox relay failed; will retry"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        }
        rounds += 1;
        if rounds.is_multiple_of(10)
            && let Ok(n) = depth(&db).await
        {
            super::metrics::outbox_depth(service, n);
        }
        if rounds.is_multiple_of(3600) {
            let _ = purge_sent(&db).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                // One last round so events committed during draining go out.
                let _ = relay_once(service, &db, bus.as_ref()).await;
                return;
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(SWEEP) => {}
        }
    }
}

/// Publishes one batch of unsent rows; how many went out.
pub async fn relay_once(service: &'static str, db: &Db, bus: &dyn Bus) -> anyhow::Result<usize> {
    let started = std::time::Instant::now();
    let sent = match db.backend() {
        // The rows stay locked while they are published, so replicas relaying the
        // same outbox never publish one row at the same time.
        Backend::Postgres => {
            let mut tx = db.pool().begin().await?;
            let (ids, batch) = unsent(&mut tx, " FOR UPDATE SKIP LOCKED").await?;
            if !ids.is_empty() {
                bus.publish(&batch).await?;
                mark_sent(&mut tx, &ids).await?;
            }
            tx.commit().await?;
            ids.len()
        }
        // One process and one connection: holding it while publishing would block
        // the in-process bus whenever a consumer's queue lives in this database.
        Backend::Sqlite => {
            let (ids, batch) = unsent(&mut *db.pool().acquire().await?, "").await?;
            if !ids.is_empty() {
                bus.publish(&batch).await?;
                mark_sent(&mut *db.pool().acquire().await?, &ids).await?;
            }
            ids.len()
        }
    };
    if sent > 0 {
        super::metrics::published(service, sent, started.elapsed());
        tracing::debug!(service, events = sent, "outbox relayed");
    }
    Ok(sent)
}

/// The oldest unsent rows: their ids and envelopes.
async fn unsent(
    conn: &mut AnyConnection,
    lock: &'static str,
) -> anyhow::Result<(Vec<String>, Vec<Envelope>)> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, envelope FROM outbox WHERE sent_at IS NULL ORDER BY created_at, id LIMIT {BATCH}{lock}"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut batch = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.try_get::<String, _>(0)?);
        let bytes: Vec<u8> = row.try_get(1)?;
        batch.push(Envelope::decode(bytes.as_slice())?);
    }
    Ok((ids, batch))
}

/// Marks rows sent in one statement.
async fn mark_sent(conn: &mut AnyConnection, ids: &[String]) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE outbox SET sent_at = $1 WHERE id IN ({})",
        crate::db::placeholders(2, ids.len())
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now_micros());
    for id in ids {
        query = query.bind(id);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Events not yet published: the outbox depth.
pub async fn depth(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(db.pool())
        .await?
        .try_get(0)
}

async fn purge_sent(db: &Db) -> Result<(), sqlx::Error> {
    let before = now_micros() - KEEP_SENT.as_micros() as i64;
    sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
        .bind(before)
        .execute(db.pool())
        .await?;
    Ok(())
}
