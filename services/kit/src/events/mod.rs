//! Domain events. A write and the events it causes commit together (the outbox);
//! a relay publishes them to the bus; consumers apply each at most once (the
//! inbox), so the bus may deliver more than once without harm.
//!
//! The bus is RabbitMQ (`AGORA_AMQP_URL`) or, in the embedded default, an
//! in-process bus with the same at-least-once contract.

pub mod bus;
pub mod inbox;
pub mod memory;
mod metrics;
pub mod outbox;
pub mod rabbit;
pub mod relay;

use prost::{Message, Name};

pub use agora_proto::events::v1::Envelope;
pub use bus::{Bus, Consumer, HandleError, Handler, RetryPolicy};

/// Event types: the envelope's `type` and the RabbitMQ routing key.
pub mod types {
    pub const USER_REGISTERED: &str = "user.registered";
    pub const USER_UPDATED: &str = "user.updated";
    pub const USER_DELETED: &str = "user.deleted";
    pub const USER_FOLLOWED: &str = "user.followed";
    pub const USER_UNFOLLOWED: &str = "user.unfollowed";
    pub const USER_ROLE_CHANGED: &str = "user.role_changed";
    pub const SESSIONS_REVOKED: &str = "auth.sessions_revoked";
    pub const ARTICLE_PUBLISHED: &str = "post.article_published";
    pub const ARTICLE_UPDATED: &str = "post.article_updated";
    pub const ARTICLE_DELETED: &str = "post.article_deleted";
    pub const COMMENT_ADDED: &str = "post.comment_added";
    pub const COMMENT_DELETED: &str = "post.comment_deleted";
    pub const ARTICLE_FAVORITED: &str = "post.article_favorited";
    pub const ARTICLE_UNFAVORITED: &str = "post.article_unfavorited";
    pub const NOTIFICATION_CREATED: &str = "notification.created";
}

/// Wraps a payload in a new envelope (UUIDv7 id, now, the current trace context).
pub fn envelope<M: Message + Name>(event_type: &str, producer: &str, payload: &M) -> Envelope {
    let now = crate::db::now_micros();
    Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        r#type: event_type.to_owned(),
        occurred_at: Some(crate::db::timestamp(now)),
        producer: producer.to_owned(),
        trace_context: current_trace_context(),
        payload: Some(prost_types::Any {
            type_url: M::type_url(),
            value: payload.encode_to_vec(),
        }),
    }
}

/// The current span's W3C trace context, so the consumer's work joins the trace
/// of the request that caused the event.
fn current_trace_context() -> std::collections::HashMap<String, String> {
    let mut headers = http::HeaderMap::new();
    crate::trace_context::inject(&tracing::Span::current(), &mut headers);
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// A span for handling `envelope` in `consumer`, a child of the trace that
/// produced it.
pub(crate) fn handling_span(consumer: &'static str, envelope: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "event",
        consumer,
        event_type = %envelope.r#type,
        event_id = %envelope.id
    );
    let mut headers = http::HeaderMap::new();
    for (k, v) in &envelope.trace_context {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    crate::trace_context::set_parent_from(&span, &headers);
    span
}

/// The payload of an envelope as `M`; a mismatch is a poison message.
pub fn payload<M: Message + Name + Default>(envelope: &Envelope) -> Result<M, HandleError> {
    let any = envelope
        .payload
        .as_ref()
        .ok_or_else(|| HandleError::Poison(format!("{} has no payload", envelope.id)))?;
    if any.type_url != M::type_url() {
        return Err(HandleError::Poison(format!(
            "{} carries {}, expected {}",
            envelope.id,
            any.type_url,
            M::type_url()
        )));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| HandleError::Poison(format!("{}: undecodable payload: {e}", envelope.id)))
}

/// Whether a binding pattern (`post.*`, `#`, `user.followed`) matches a type,
/// with RabbitMQ topic semantics, so the in-process bus routes exactly as the
/// broker does.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = routing_key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::events::v1::{UserFollowed, UserRegistered};

    #[test]
    fn payloads_round_trip_and_mismatches_are_poison() {
        let env = envelope(
            types::USER_FOLLOWED,
            "user",
            &UserFollowed {
                follower_id: "a".into(),
                followee_id: "b".into(),
            },
        );
        let back: UserFollowed = payload(&env).unwrap();
        assert_eq!(back.followee_id, "b");
        assert!(matches!(
            payload::<UserRegistered>(&env),
            Err(HandleError::Poison(_))
        ));
    }

    #[test]
    fn an_event_carries_its_producers_trace_to_the_consumer_span() {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let trace_of = |span: &tracing::Span| span.context().span().span_context().trace_id();

        tracing::subscriber::with_default(crate::trace_context::test_subscriber(), || {
            let request = tracing::info_span!("request");
            let env = request
                .in_scope(|| envelope(types::USER_FOLLOWED, "user", &UserFollowed::default()));
            assert!(env.trace_context.contains_key("traceparent"), "{env:?}");

            let handling = handling_span("test", &env);

            assert_eq!(trace_of(&handling), trace_of(&request));
        });
    }

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        assert!(topic_matches("post.*", "post.comment_added"));
        assert!(topic_matches("#", "user.followed"));
        assert!(topic_matches("user.followed", "user.followed"));
        assert!(!topic_matches("user.*", "post.comment_added"));
        assert!(!topic_matches("post.*", "post"));
    }
}
