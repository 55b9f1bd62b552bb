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
