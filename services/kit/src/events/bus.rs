//! What a bus is: it publishes batches with confirmation, runs consumers with
//! retries and dead letters, and fans live events out to every replica.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Envelope;
use crate::db::Db;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why handling an event failed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth trying again later (a database or a service was unavailable).
    #[error("retry: {0:#}")]
    Retry(#[from] anyhow::Error),
    /// Will never succeed (undecodable, or breaks a rule): dead-letter it now.
    #[error("poison: {0}")]
    Poison(String),
}

/// Applies one event. Must be idempotent (use the inbox): delivery is at least once.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>>;

    /// Events with the same key are handled one after another, in the order the
    /// broker delivers them; events with different keys may be handled at the same
    /// time. The default puts every event under one key: strictly one at a time.
    fn order_key(&self, _envelope: &Envelope) -> u64 {
        0
    }
}

/// How often and how patiently a consumer retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Deliveries in all, the first included, before the dead letter.
    pub attempts: u32,
    /// Wait before the second delivery; doubled for each one after.
    pub base_delay: Duration,
}

impl RetryPolicy {
    /// Five deliveries, 2 s before the second, doubling after.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 5,
        base_delay: Duration::from_secs(2),
    };
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RetryPolicy {
    /// Delay before delivery number `attempt + 1` (attempt counts from 1).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
    }
}

/// A durable consumer: a service's queue of the event types it binds.
#[derive(Clone)]
pub struct Consumer {
    /// Queue name stem, e.g. `notification` (RabbitMQ queue `agora.notification`).
    pub name: &'static str,
    /// Routing-key patterns (topic syntax).
    pub bindings: Vec<&'static str>,
    pub handler: Arc<dyn Handler>,
    /// The consumer's own database: where the in-process bus keeps its queue.
    pub db: Db,
    pub retry: RetryPolicy,
}

/// A message that exhausted its attempts.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub envelope: Envelope,
    pub attempts: u32,
    pub last_error: String,
}

/// The event bus.
pub trait Bus: Send + Sync + 'static {
    /// Publishes a batch; `Ok` only once every event is safely with the bus.
    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Starts delivering to `consumer` until `shutdown`.
    fn start_consumer(
        &self,
        consumer: Consumer,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Every event bound for live fan-out, as it is published anywhere (each
    /// replica receives its own copy).
    fn live(&self) -> broadcast::Receiver<Arc<Envelope>>;

    /// Whether the bus is connected; readiness follows it.
    fn is_healthy(&self) -> bool;

    /// The dead letters of a consumer.
    fn dead_letters<'a>(
        &'a self,
        consumer: &'a Consumer,
    ) -> BoxFuture<'a, anyhow::Result<Vec<DeadLetter>>>;

    /// Puts a consumer's dead letters back in its queue; how many.
    fn redrive<'a>(&'a self, consumer: &'a Consumer) -> BoxFuture<'a, anyhow::Result<u64>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base() {
        let policy = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_secs(2),
        };
        assert_eq!(policy.delay_after(1), Duration::from_secs(2));
        assert_eq!(policy.delay_after(2), Duration::from_secs(4));
        assert_eq!(policy.delay_after(3), Duration::from_secs(8));
    }
}
