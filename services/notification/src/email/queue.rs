//! SQL of the `email_job` queue: claiming due jobs so that several replicas never
//! send the same one at once, and recording how a delivery went.

use agora_kit::db::{Backend, Db};
use sqlx::{AssertSqlSafe, Row};

/// A job the worker now holds.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub user_id: String,
    pub subject: String,
    pub body: String,
    /// Deliveries tried before this one.
    pub attempts: i64,
    /// The recipient's address; `None` when the account is gone.
    pub to: Option<String>,
}

/// Claims up to `batch` jobs due at `now`, leasing them until `lease_until`: a
/// replica that dies mid-send leaves a job that comes back by itself when the
/// lease runs out.
///
/// PostgreSQL: `FOR UPDATE SKIP LOCKED` in a short transaction, so replicas
/// claiming together take disjoint jobs, and the lease is written before commit.
/// SQLite: one connection serialises every transaction, so a plain
/// select-then-update is already exclusive.
pub async fn claim_due(
    db: &Db,
    now: i64,
    lease_until: i64,
    batch: i64,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    let lock = match db.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let mut tx = db.pool().begin().await?;
    let sql = format!(
        "SELECT id, user_id, subject, body, attempts FROM email_job \
         WHERE status = 'ready' AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at, id LIMIT $2{lock}"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let job = ClaimedJob {
            id: row.try_get(0)?,
            user_id: row.try_get(1)?,
            subject: row.try_get(2)?,
            body: row.try_get(3)?,
            attempts: row.try_get(4)?,
            to: None,
        };
        sqlx::query("UPDATE email_job SET next_attempt_at = $1 WHERE id = $2")
            .bind(lease_until)
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
        jobs.push(job);
    }
    tx.commit().await?;

    // Addresses are read at send time, not copied into the job, so a changed
    // email (user.updated) is honoured and a deleted account gets nothing.
    for job in &mut jobs {
        job.to = sqlx::query("SELECT email FROM account WHERE user_id = $1")
            .bind(&job.user_id)
            .fetch_optional(db.pool())
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
    }
    Ok(jobs)
}

/// Records a delivery.
pub async fn mark_sent(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE email_job SET status = 'sent', attempts = attempts + 1, last_error = NULL \
         WHERE id = $1",
    )
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Records a failed delivery: the job waits until `retry_at`, or is dead when
/// `retry_at` is `None`.
pub async fn mark_failed(
    db: &Db,
    id: &str,
    attempts: i64,
    retry_at: Option<i64>,
    error: &str,
) -> Result<(), sqlx::Error> {
    match retry_at {
        Some(at) => {
            sqlx::query(
                "UPDATE email_job SET attempts = $1, next_attempt_at = $2, last_error = $3 \
                 WHERE id = $4",
            )
            .bind(attempts)
            .bind(at)
            .bind(error)
            .bind(id)
            .execute(db.pool())
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE email_job SET attempts = $1, status = 'dead', last_error = $2 WHERE id = $3",
            )
            .bind(attempts)
            .bind(error)
            .bind(id)
            .execute(db.pool())
            .await?;
        }
    }
    Ok(())
}
