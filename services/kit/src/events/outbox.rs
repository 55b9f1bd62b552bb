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

/// Adds many envelopes in few statements (fan-outs write hundreds at once).
pub async fn enqueue_many(
    conn: &mut AnyConnection,
    envelopes: &[Envelope],
) -> Result<(), sqlx::Error> {
    // 4 values a row; 500 rows keep each statement far below bind-parameter limits.
    for chunk in envelopes.chunks(500) {
        let rows = (0..chunk.len())
            .map(|i| {
                format!(
                    "(${}, ${}, ${}, ${})",
                    4 * i + 1,
                    4 * i + 2,
                    4 * i + 3,
                    4 * i + 4
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("INSERT INTO outbox (id, type, envelope, created_at) VALUES {rows}");
        let now = crate::db::now_micros();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for envelope in chunk {
            query = query
                .bind(envelope.id.clone())
                .bind(envelope.r#type.clone())
                .bind(envelope.encode_to_vec())
                .bind(now);
        }
        query.execute(&mut *conn).await?;
    }
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
