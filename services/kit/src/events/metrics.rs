//! Event metrics: outbox depth and publish latency on the producer side; consumer
//! lag (commit to handled), retries and dead letters on the consumer side.

use std::time::Duration;

use super::Envelope;

/// A batch went to the bus in `elapsed`.
pub(crate) fn published(service: &'static str, events: usize, elapsed: Duration) {
    metrics::counter!("agora_events_published_total", "service" => service)
        .increment(events as u64);
    metrics::histogram!("agora_events_publish_seconds", "service" => service)
        .record(elapsed.as_secs_f64());
}

/// Events committed but not yet published.
pub(crate) fn outbox_depth(service: &'static str, depth: i64) {
    metrics::gauge!("agora_outbox_depth", "service" => service).set(depth as f64);
}

/// An event was applied; its lag is the time since its change committed.
pub(crate) fn handled(consumer: &'static str, envelope: &Envelope) {
    metrics::counter!("agora_events_handled_total", "consumer" => consumer).increment(1);
    if let Some(at) = &envelope.occurred_at {
        let occurred = at.seconds as f64 + f64::from(at.nanos) / 1e9;
        let now = crate::db::now_micros() as f64 / 1e6;
        metrics::histogram!("agora_events_consumer_lag_seconds", "consumer" => consumer)
            .record((now - occurred).max(0.0));
    }
}

pub(crate) fn retried(consumer: &'static str) {
    metrics::counter!("agora_events_retries_total", "consumer" => consumer).increment(1);
}

pub(crate) fn dead_lettered(consumer: &'static str) {
    metrics::counter!("agora_events_dead_letters_total", "consumer" => consumer).increment(1);
}
