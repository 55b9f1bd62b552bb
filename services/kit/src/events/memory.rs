//! The in-process bus of the embedded default.
//!
//! It keeps the broker's contract without a broker: publishing puts each event in
//! the queue table (`event_queue`) of every consumer bound to its type, in that
//! consumer's own database, before the relay marks the outbox row sent — so a
//! crash loses nothing. A worker per consumer delivers from its table with the
//! same retries, exponential backoff and dead letters as the RabbitMQ bus. Live
//! fan-out is a broadcast channel: there is one replica.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::bus::{BoxFuture, DeadLetter};
use super::{Bus, Consumer, Envelope, HandleError, topic_matches};
use crate::db::{Backend, Db, now_micros};

/// How long an idle worker sleeps before looking for due retries.
const TICK: Duration = Duration::from_millis(500);

struct Registered {
    consumer: Consumer,
    wake: Arc<Notify>,
}

/// The in-process bus.
pub struct MemoryBus {
    consumers: RwLock<Vec<Arc<Registered>>>,
    live: broadcast::Sender<Arc<Envelope>>,
    live_bindings: Vec<&'static str>,
}

impl MemoryBus {
    /// A bus whose live fan-out carries the types matching `live_bindings`.
    pub fn new(live_bindings: Vec<&'static str>) -> Self {
        Self {
            consumers: RwLock::new(Vec::new()),
            live: broadcast::channel(1024).0,
            live_bindings,
        }
    }
}

/// Creates the consumer's queue table if missing (the bus owns it, not the service).
async fn ensure_table(db: &Db) -> Result<(), sqlx::Error> {
    let blob = match db.backend() {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS event_queue (\
           consumer TEXT NOT NULL, event_id TEXT NOT NULL, envelope {blob} NOT NULL, \
           attempts BIGINT NOT NULL DEFAULT 0, next_attempt_at BIGINT NOT NULL, \
           status TEXT NOT NULL DEFAULT 'ready', last_error TEXT, created_at BIGINT NOT NULL, \
           PRIMARY KEY (consumer, event_id))"
    )))
    .execute(db.pool())
    .await?;
    sqlx::query(
        "CREATE INDEX IF NOT EXISTS event_queue_due_idx ON event_queue (consumer, status, next_attempt_at)",
    )
    .execute(db.pool())
    .await?;
    Ok(())
}

impl Bus for MemoryBus {
    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let consumers: Vec<Arc<Registered>> = self.consumers.read().expect("bus lock").clone();
            for envelope in batch {
                for reg in &consumers {
                    let c = &reg.consumer;
                    if !c
                        .bindings
                        .iter()
                        .any(|b| topic_matches(b, &envelope.r#type))
                    {
                        continue;
                    }
                    let now = now_micros();
                    sqlx::query(
                        "INSERT INTO event_queue (consumer, event_id, envelope, next_attempt_at, created_at) \
                         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (consumer, event_id) DO NOTHING",
                    )
                    .bind(c.name)
                    .bind(&envelope.id)
                    .bind(envelope.encode_to_vec())
                    .bind(now)
                    .execute(c.db.pool())
                    .await?;
                    reg.wake.notify_one();
                }
                if self
                    .live_bindings
                    .iter()
                    .any(|b| topic_matches(b, &envelope.r#type))
                {
                    // Nobody listening is fine: live delivery is best effort by design.
                    let _ = self.live.send(Arc::new(envelope.clone()));
                }
            }
            Ok(())
        })
    }

    fn start_consumer(
        &self,
        consumer: Consumer,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            ensure_table(&consumer.db).await?;
            let reg = Arc::new(Registered {
                consumer,
                wake: Arc::new(Notify::new()),
            });
            self.consumers.write().expect("bus lock").push(reg.clone());
            tokio::spawn(work(reg, shutdown));
            Ok(())
        })
    }

    fn live(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.live.subscribe()
    }

    fn is_healthy(&self) -> bool {
        true
    }

    fn dead_letters<'a>(
        &'a self,
        consumer: &'a Consumer,
    ) -> BoxFuture<'a, anyhow::Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            ensure_table(&consumer.db).await?;
            let rows = sqlx::query(
                "SELECT envelope, attempts, last_error FROM event_queue \
                 WHERE consumer = $1 AND status = 'dead' ORDER BY created_at",
            )
            .bind(consumer.name)
            .fetch_all(consumer.db.pool())
            .await?;
            rows.iter()
                .map(|row| {
                    let bytes: Vec<u8> = row.try_get(0)?;
                    Ok(DeadLetter {
                        envelope: Envelope::decode(bytes.as_slice())?,
                        attempts: row.try_get::<i64, _>(1)? as u32,
                        last_error: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                    })
                })
                .collect()
        })
    }

    fn redrive<'a>(&'a self, consumer: &'a Consumer) -> BoxFuture<'a, anyhow::Result<u64>> {
        Box::pin(async move {
            ensure_table(&consumer.db).await?;
            let done = sqlx::query(
                "UPDATE event_queue SET status = 'ready', attempts = 0, next_attempt_at = $1 \
                 WHERE consumer = $2 AND status = 'dead'",
            )
            .bind(now_micros())
            .bind(consumer.name)
            .execute(consumer.db.pool())
            .await?;
            Ok(done.rows_affected())
        })
    }
}

/// Delivers one consumer's due events until shutdown.
async fn work(reg: Arc<Registered>, shutdown: CancellationToken) {
    loop {
        match deliver_due(&reg.consumer).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(consumer = reg.consumer.name, error = %err, "event queue unavailable")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reg.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

async fn deliver_due(c: &Consumer) -> Result<usize, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, envelope, attempts FROM event_queue \
         WHERE consumer = $1 AND status = 'ready' AND next_attempt_at <= $2 \
         ORDER BY created_at, event_id LIMIT 50",
    )
    .bind(c.name)
    .bind(now_micros())
    .fetch_all(c.db.pool())
    .await?;
    for row in &rows {
        let event_id: String = row.try_get(0)?;
        let bytes: Vec<u8> = row.try_get(1)?;
        let attempts = row.try_get::<i64, _>(2)? as u32 + 1;
        let outcome = match Envelope::decode(bytes.as_slice()) {
            Ok(envelope) => {
                let span = super::handling_span(c.name, &envelope);
                let outcome = c.handler.handle(&envelope).instrument(span).await;
                if outcome.is_ok() {
                    super::metrics::handled(c.name, &envelope);
                }
                outcome
            }
            Err(err) => Err(HandleError::Poison(format!("undecodable envelope: {err}"))),
        };
        match outcome {
            Ok(()) => {
                sqlx::query("DELETE FROM event_queue WHERE consumer = $1 AND event_id = $2")
                    .bind(c.name)
                    .bind(&event_id)
                    .execute(c.db.pool())
                    .await?;
            }
            Err(err) => {
                let dead = matches!(err, HandleError::Poison(_)) || attempts >= c.retry.attempts;
                if dead {
                    tracing::error!(consumer = c.name, %event_id, attempts, error = %err, "event dead-lettered");
                    super::metrics::dead_lettered(c.name);
                } else {
                    tracing::warn!(consumer = c.name, %event_id, attempts, error = %err, "event will be retried");
                    super::metrics::retried(c.name);
                }
                let next = now_micros() + c.retry.delay_after(attempts).as_micros() as i64;
                sqlx::query(
                    "UPDATE event_queue SET attempts = $1, next_attempt_at = $2, status = $3, last_error = $4 \
                     WHERE consumer = $5 AND event_id = $6",
                )
                .bind(i64::from(attempts))
                .bind(next)
                .bind(if dead { "dead" } else { "ready" })
                .bind(err.to_string())
                .bind(c.name)
                .bind(&event_id)
                .execute(c.db.pool())
                .await?;
            }
        }
    }
    Ok(rows.len())
}
