//! The consumer side of exactly-once effects: an `inbox` row keyed by (consumer,
//! event id), inserted in the same transaction as the effect. A redelivered event
//! finds its row and changes nothing.
//!
//! Each consuming service creates the table in its own migrations:
//! `CREATE TABLE inbox (consumer TEXT NOT NULL, event_id TEXT NOT NULL,
//!  handled_at BIGINT NOT NULL, PRIMARY KEY (consumer, event_id))`.

use sqlx::AnyConnection;

/// Claims `event_id` for `consumer` inside the caller's transaction: true the
/// first time, false when it was already handled (skip the effect, commit nothing).
pub async fn claim(
    conn: &mut AnyConnection,
    consumer: &str,
    event_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(crate::db::now_micros())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How long handled event ids are remembered. Redelivery comes within minutes
/// (retries) or not at all (a dead letter was never handled, so it has no row).
pub const KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Forgets handled event ids older than [`KEEP`], every hour until `shutdown`.
pub async fn prune_forever(db: crate::db::Db, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        let before = crate::db::now_micros() - KEEP.as_micros() as i64;
        match sqlx::query("DELETE FROM inbox WHERE handled_at < $1")
            .bind(before)
            .execute(db.pool())
            .await
        {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::info!(forgotten = done.rows_affected(), "inbox pruned")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "inbox pruning failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
