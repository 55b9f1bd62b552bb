//! The producer side: events are rows of an `outbox` table written in the same
//! transaction as the change that caused them, and a relay publishes them.
//!
//! Each producing service creates the table in its own migrations:
//! `CREATE TABLE outbox (id TEXT PRIMARY KEY, type TEXT NOT NULL, envelope BLOB
//!  (BYTEA) NOT NULL, created_at BIGINT NOT NULL, sent_at BIGINT)` with an index on
//! `(sent_at, created_at)`.

use prost::Message;
use sqlx::AnyConnection;

use super::Envelope;

/// Adds `envelope` to the outbox inside the caller's transaction.
pub async fn enqueue(conn: &mut AnyConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (id, type, envelope, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&envelope.id)
        .bind(&envelope.r#type)
        .bind(envelope.encode_to_vec())
        .bind(crate::db::now_micros())
        .execute(conn)
        .await?;
    Ok(())
}

/// Commits a transaction that wrote outbox rows and wakes the relay, so the
/// events go out now rather than at the next sweep.
pub async fn commit(
    tx: sqlx::Transaction<'_, sqlx::Any>,
    wake: &super::relay::Wake,
) -> Result<(), sqlx::Error> {
    tx.commit().await?;
    wake.notify_one();
    Ok(())
}
