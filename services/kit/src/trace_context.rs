//! W3C trace context across hops, so one trace runs from the HTTP request through
//! every gRPC call it causes: [`set_parent_from`] continues the trace an incoming
//! `traceparent` names, [`inject`] writes the current span into outgoing headers,
//! and [`InjectContext`] does the latter for every call made through a channel.
//!
//! The format is whatever propagator is installed globally ([`install_propagator`],
//! called by `telemetry::init`). Without the OpenTelemetry layer (no OTLP endpoint)
//! spans carry no trace context: nothing is injected, and a `traceparent` the caller
//! sent is left as it was.

use std::sync::Once;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Installs the W3C `traceparent`/`tracestate` propagator process-wide. The default
/// global propagator does nothing, which would silently cut every trace at the
/// first hop. Safe to call more than once.
pub fn install_propagator() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| global::set_text_map_propagator(TraceContextPropagator::new()));
}

/// The trace context the headers carry, if any.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Makes the trace named by `headers` the parent of `span`. Must run before the
/// span is first entered: after that its OpenTelemetry span has been started.
pub fn set_parent_from(span: &Span, headers: &HeaderMap) {
    let parent = extract(headers);
    // Without a valid parent the span keeps its place in the local span tree
    // instead of being cut loose as a new root.
    if parent.span().span_context().is_valid() {
        // Fails only when there is no OpenTelemetry layer, i.e. no trace to join.
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s trace context into `headers`, replacing any there.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(headers));
        });
    }
}

/// Reads propagation fields from HTTP headers (gRPC metadata included).
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes propagation fields into HTTP headers; values that are not valid header
/// text are dropped rather than sent broken.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// A client-side service (typically a `tonic::transport::Channel`) whose every
/// request carries the current span's trace context. It is still a
/// `tonic::client::GrpcService`, so generated clients take it in place of the
/// channel: `UserInternalServiceClient::new(InjectContext::new(channel))`.
#[derive(Debug, Clone)]
pub struct InjectContext<S> {
    inner: S,
}

impl<S> InjectContext<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> tower::Service<http::Request<B>> for InjectContext<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Generated clients call this from inside the caller's future, so the
        // current span is the one handling the caller's own request.
        inject(&Span::current(), request.headers_mut());
        self.inner.call(request)
    }
}

/// [`InjectContext`] as a layer, for `tower::ServiceBuilder` stacks.
#[derive(Debug, Clone, Copy, Default)]
pub struct InjectContextLayer;

impl<S> tower::Layer<S> for InjectContextLayer {
    type Service = InjectContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InjectContext::new(inner)
    }
}

/// A subscriber with the OpenTelemetry layer and no exporter, for tests that need
/// spans to carry trace context.
#[cfg(test)]
pub(crate) fn test_subscriber() -> impl tracing::Subscriber + Send + Sync {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    install_propagator();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceId;
    use tower::ServiceExt as _;
    use tracing::Instrument as _;

    use super::*;

    fn trace_id(span: &Span) -> TraceId {
        span.context().span().span_context().trace_id()
    }

    fn trace_id_in(headers: &HeaderMap) -> TraceId {
        extract(headers).span().span_context().trace_id()
    }

    #[test]
    fn a_span_injected_into_headers_extracts_to_the_same_trace() {
        tracing::subscriber::with_default(test_subscriber(), || {
            let span = tracing::info_span!("outgoing");
            let mut headers = HeaderMap::new();

            inject(&span, &mut headers);

            assert!(headers.contains_key("traceparent"));
            assert_ne!(trace_id(&span), TraceId::INVALID);
            assert_eq!(trace_id_in(&headers), trace_id(&span));
        });
    }

    #[test]
    fn a_span_continues_the_trace_an_incoming_traceparent_names() {
        tracing::subscriber::with_default(test_subscriber(), || {
            let mut incoming = HeaderMap::new();
            incoming.insert(
                "traceparent",
                HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            let span = tracing::info_span!("incoming");

            set_parent_from(&span, &incoming);

            assert_eq!(
                trace_id(&span),
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
            );
        });
    }

    #[test]
    fn without_the_opentelemetry_layer_headers_are_left_alone() {
        let span = tracing::info_span!("untraced");
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("from-the-caller"));

        inject(&span, &mut headers);

        assert_eq!(headers["traceparent"], "from-the-caller");
    }

    #[tokio::test]
    async fn calls_through_inject_context_carry_the_current_trace() {
        let _subscriber = tracing::subscriber::set_default(test_subscriber());
        let seen = Arc::new(Mutex::new(HeaderMap::new()));
        let record = seen.clone();
        let channel = InjectContext::new(tower::service_fn(move |request: http::Request<()>| {
            *record.lock().unwrap() = request.headers().clone();
            async { Ok::<_, Infallible>(http::Response::new(())) }
        }));
        let span = tracing::info_span!("caller");

        channel
            .oneshot(http::Request::new(()))
            .instrument(span.clone())
            .await
            .unwrap();

        assert_eq!(trace_id_in(&seen.lock().unwrap()), trace_id(&span));
    }
}
