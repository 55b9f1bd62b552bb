//! The RabbitMQ bus.
//!
//! Topology, declared idempotently on every (re)connect, under a namespace
//! (`AGORA_AMQP_NAMESPACE`, default `agora`) so environments can share a broker:
//! - `agora.events`: durable topic exchange; routing key = event type.
//! - `agora.<consumer>`: one durable quorum queue per consuming service, bound to
//!   the types it wants, with a delivery limit so a message that crashes its
//!   consumer again and again ends in the dead-letter queue instead of looping.
//! - `agora.<consumer>.retry.<n>`: delay queues, one per retry, whose TTL doubles
//!   (base, 2×base, …); expired messages dead-letter back to the work queue.
//! - `agora.<consumer>.dead`: where a message goes after its last attempt.
//! - one exclusive, auto-deleted queue per replica for live fan-out.
//!
//! Publishing waits for publisher confirms of the whole batch (pipelined, not one
//! at a time). Consumers ack manually after the handler's transaction commits.
//! A supervisor reconnects with backoff and re-declares everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use prost::Message;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::bus::{BoxFuture, DeadLetter};
use super::{Bus, Consumer, Envelope, HandleError};
use crate::config::Secret;

/// Header carrying which delivery attempt a retried message is on.
const ATTEMPT_HEADER: &str = "x-agora-attempt";
/// Header carrying the last error of a dead letter.
const ERROR_HEADER: &str = "x-agora-error";
/// Unacknowledged messages in flight per consumer.
const PREFETCH: u16 = 64;

/// Deliveries of one consumer handled at once, at most, each lane keeping the order
/// of one set of [`super::Handler::order_key`]s.
const LANES: usize = 8;

/// Exchange and queue names under one namespace.
#[derive(Debug, Clone)]
struct Names {
    namespace: String,
}

impl Names {
    /// The exchange every event goes through.
    fn exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    fn work(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.namespace)
    }

    fn retry(&self, consumer: &str, attempt: u32) -> String {
        format!("{}.{consumer}.retry.{attempt}", self.namespace)
    }

    fn dead(&self, consumer: &str) -> String {
        format!("{}.{consumer}.dead", self.namespace)
    }
}

/// A consumer's queues, declared by every process so that events published
/// before any consumer ever ran are kept, not dropped as unroutable.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: &'static str,
    pub bindings: Vec<&'static str>,
    pub retry: super::RetryPolicy,
}

impl From<&Consumer> for QueueSpec {
    fn from(c: &Consumer) -> Self {
        Self {
            name: c.name,
            bindings: c.bindings.clone(),
            retry: c.retry,
        }
    }
}

fn s(value: &str) -> ShortString {
    value.into()
}

/// Consumers to run on every connection, and the current connection.
#[derive(Default)]
struct Consumers {
    registered: Vec<(Consumer, CancellationToken)>,
    connection: Option<Arc<Connection>>,
}

/// The RabbitMQ bus; cheap to share behind an `Arc`.
pub struct RabbitBus {
    url: Secret,
    names: Names,
    /// Consumer queues to declare on every connect.
    topology: Vec<QueueSpec>,
    /// The confirm-mode channel publishers share; `None` while disconnected.
    publisher: Mutex<Option<Channel>>,
    healthy: AtomicBool,
    /// Registered consumers and the live connection, under one lock so a
    /// consumer registered while the supervisor connects is started exactly once.
    consumers: Mutex<Consumers>,
    live: broadcast::Sender<Arc<Envelope>>,
    live_bindings: Vec<&'static str>,
    /// Wakes the supervisor when a publish finds the connection broken.
    broken: tokio::sync::Notify,
}

impl RabbitBus {
    /// Connects (retrying until `shutdown`) and keeps reconnecting in the background.
    pub async fn start(
        url: Secret,
        namespace: &str,
        topology: Vec<QueueSpec>,
        live_bindings: Vec<&'static str>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let bus = Arc::new(Self {
            url,
            names: Names {
                namespace: namespace.to_owned(),
            },
            topology,
            publisher: Mutex::new(None),
            healthy: AtomicBool::new(false),
            consumers: Mutex::new(Consumers::default()),
            live: broadcast::channel(1024).0,
            live_bindings,
            broken: tokio::sync::Notify::new(),
        });
        tokio::spawn(supervise(bus.clone(), shutdown));
        bus
    }

    async fn connect(&self) -> anyhow::Result<Arc<Connection>> {
        let conn = Connection::connect(self.url.expose(), ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        declare_exchange(&channel, &self.names).await?;
        for spec in &self.topology {
            declare_consumer_queues(&channel, &self.names, spec).await?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *self.publisher.lock().await = Some(channel);
        self.start_live(&conn).await?;
        let conn = Arc::new(conn);
        let mut consumers = self.consumers.lock().await;
        for (consumer, shutdown) in consumers.registered.clone() {
            start_consuming(&conn, &self.names, consumer, shutdown).await?;
        }
        consumers.connection = Some(conn.clone());
        Ok(conn)
    }

    async fn start_live(&self, conn: &Connection) -> anyhow::Result<()> {
        if self.live_bindings.is_empty() {
            return Ok(());
        }
        let channel = conn.create_channel().await?;
        let queue = channel
            .queue_declare(
                s(""),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        for binding in &self.live_bindings {
            channel
                .queue_bind(
                    queue.name().clone(),
                    s(&self.names.exchange()),
                    s(binding),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let mut deliveries = channel
            .basic_consume(
                queue.name().clone(),
                s("live"),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let live = self.live.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                if let Ok(envelope) = Envelope::decode(delivery.data.as_slice()) {
                    let _ = live.send(Arc::new(envelope));
                }
            }
        });
        Ok(())
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        self.publisher
            .lock()
            .await
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the event bus is not connected"))
    }
}

async fn declare_exchange(channel: &Channel, names: &Names) -> lapin::Result<()> {
    channel
        .exchange_declare(
            s(&names.exchange()),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Reconnects with backoff whenever the connection drops, until shutdown.
async fn supervise(bus: Arc<RabbitBus>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            conn = bus.connect() => conn,
        };
        match conn {
            Ok(conn) => {
                tracing::info!("event bus connected");
                bus.healthy.store(true, Ordering::SeqCst);
                backoff = Duration::from_millis(250);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            let _ = conn.close(200, s("shutdown")).await;
                            return;
                        }
                        _ = bus.broken.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    if !conn.status().connected() {
                        break;
                    }
                    let publisher_ok = bus
                        .publisher
                        .lock()
                        .await
                        .as_ref()
                        .is_some_and(|c| c.status().connected());
                    if !publisher_ok {
                        let _ = conn.close(320, s("reconnecting")).await;
                        break;
                    }
                }
                bus.healthy.store(false, Ordering::SeqCst);
                *bus.publisher.lock().await = None;
                bus.consumers.lock().await.connection = None;
                tracing::warn!("event bus connection lost; reconnecting");
            }
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    ?backoff,
                    "event bus unreachable"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
        }
    }
}

/// Declares a consumer's queues and starts delivering to its handler.
async fn start_consuming(
    conn: &Connection,
    names: &Names,
    consumer: Consumer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let channel = conn.create_channel().await?;
    declare_exchange(&channel, names).await?;
    declare_consumer_queues(&channel, names, &QueueSpec::from(&consumer)).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let names = names.clone();
    let mut deliveries = channel
        .basic_consume(
            s(&names.work(consumer.name)),
            s(&format!("{}-{}", consumer.name, uuid::Uuid::now_v7())),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Lanes: a delivery goes to the lane of its order key, so events that must
    // stay in order do, and the others do not wait behind them. Acks are per
    // delivery, so a lane finishing early never acknowledges another's work.
    let consumer = Arc::new(consumer);
    let channel = Arc::new(channel);
    let mut lanes = Vec::with_capacity(LANES);
    for _ in 0..LANES {
        let (lane, mut queued) = tokio::sync::mpsc::channel::<(
            lapin::message::Delivery,
            Result<Envelope, prost::DecodeError>,
        )>(usize::from(PREFETCH));
        lanes.push(lane);
        let (channel, names, consumer) = (channel.clone(), names.clone(), consumer.clone());
        tokio::spawn(async move {
            while let Some((delivery, decoded)) = queued.recv().await {
                let handled = handle_delivery(&channel, &names, &consumer, delivery, decoded);
                if let Err(err) = handled.await {
                    tracing::warn!(
                        consumer = consumer.name,
                        error = format!("{err:#}"),
                        "delivery handling failed"
                    );
                }
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    // The connection dropped: the supervisor starts a new consumer.
                    _ => return,
                },
            };
            // Decoded once, here; undecodable deliveries go to lane 0, which
            // dead-letters them.
            let decoded = Envelope::decode(delivery.data.as_slice());
            let key = decoded
                .as_ref()
                .map_or(0, |envelope| consumer.handler.order_key(envelope));
            let lane = &lanes[(key % LANES as u64) as usize];
            if lane.send((delivery, decoded)).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

async fn declare_consumer_queues(
    channel: &Channel,
    names: &Names,
    c: &QueueSpec,
) -> anyhow::Result<()> {
    let work = names.work(c.name);
    let dead = names.dead(c.name);
    let mut quorum = FieldTable::default();
    quorum.insert(s("x-queue-type"), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(s(&dead), durable, quorum.clone())
        .await?;

    let mut work_args = quorum.clone();
    // Redeliveries after consumer crashes (not handler failures, which go through
    // the retry queues) are capped too; past the cap the broker dead-letters.
    work_args.insert(
        s("x-delivery-limit"),
        AMQPValue::LongInt(i32::try_from(c.retry.attempts * 2).unwrap_or(20)),
    );
    work_args.insert(
        s("x-dead-letter-exchange"),
        AMQPValue::LongString("".into()),
    );
    work_args.insert(
        s("x-dead-letter-routing-key"),
        AMQPValue::LongString(dead.as_str().into()),
    );
    channel.queue_declare(s(&work), durable, work_args).await?;
    for binding in &c.bindings {
        channel
            .queue_bind(
                s(&work),
                s(&names.exchange()),
                s(binding),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    for attempt in 1..c.retry.attempts {
        let mut args = FieldTable::default();
        let ttl = c
            .retry
            .delay_after(attempt)
            .as_millis()
            .min(i32::MAX as u128) as i32;
        args.insert(s("x-message-ttl"), AMQPValue::LongInt(ttl));
        args.insert(
            s("x-dead-letter-exchange"),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            s("x-dead-letter-routing-key"),
            AMQPValue::LongString(work.as_str().into()),
        );
        channel
            .queue_declare(s(&names.retry(c.name, attempt)), durable, args)
            .await?;
    }
    Ok(())
}

fn attempt_of(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&s(ATTEMPT_HEADER)).cloned())
        .and_then(|v| match v {
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(1)
}

async fn handle_delivery(
    channel: &Channel,
    names: &Names,
    c: &Consumer,
    delivery: lapin::message::Delivery,
    decoded: Result<Envelope, prost::DecodeError>,
) -> anyhow::Result<()> {
    let attempt = attempt_of(&delivery.properties);
    let outcome = match decoded {
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
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Err(err) => {
            let dead = matches!(err, HandleError::Poison(_)) || attempt >= c.retry.attempts;
            let target = if dead {
                tracing::error!(consumer = c.name, attempt, error = %err, "event dead-lettered");
                super::metrics::dead_lettered(c.name);
                names.dead(c.name)
            } else {
                tracing::warn!(consumer = c.name, attempt, error = %err, "event will be retried");
                super::metrics::retried(c.name);
                names.retry(c.name, attempt)
            };
            let mut headers = FieldTable::default();
            headers.insert(s(ATTEMPT_HEADER), AMQPValue::LongInt(attempt as i32 + 1));
            let message: String = err.to_string().chars().take(200).collect();
            headers.insert(
                s(ERROR_HEADER),
                AMQPValue::LongString(message.as_str().into()),
            );
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers);
            // Hand the copy over before letting go of the original: a crash in
            // between repeats the event, never loses it.
            let confirm = channel
                .basic_publish(
                    s(""),
                    s(&target),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    properties,
                )
                .await?
                .await?;
            if !confirm.is_ack() {
                delivery
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
                anyhow::bail!("the broker refused the retry copy");
            }
            delivery.ack(BasicAckOptions::default()).await?;
        }
    }
    Ok(())
}

impl Bus for RabbitBus {
    fn publish<'a>(&'a self, batch: &'a [Envelope]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let channel = self.channel().await?;
            let mut confirms = Vec::with_capacity(batch.len());
            for envelope in batch {
                let mut headers = FieldTable::default();
                for (k, v) in &envelope.trace_context {
                    headers.insert(s(k), AMQPValue::LongString(v.as_str().into()));
                }
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(s(&envelope.id))
                    .with_headers(headers);
                let sent = channel
                    .basic_publish(
                        s(&self.names.exchange()),
                        s(&envelope.r#type),
                        BasicPublishOptions::default(),
                        &envelope.encode_to_vec(),
                        properties,
                    )
                    .await;
                match sent {
                    Ok(confirm) => confirms.push(confirm),
                    Err(err) => {
                        self.broken.notify_one();
                        return Err(err.into());
                    }
                }
            }
            for confirm in confirms {
                let confirmation = confirm.await.inspect_err(|_| self.broken.notify_one())?;
                if !confirmation.is_ack() {
                    anyhow::bail!("the broker did not confirm an event");
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
            let mut consumers = self.consumers.lock().await;
            consumers
                .registered
                .push((consumer.clone(), shutdown.clone()));
            // Connected already: start now. Otherwise the supervisor starts it
            // with every consumer when it (re)connects.
            if let Some(conn) = consumers.connection.clone() {
                start_consuming(&conn, &self.names, consumer, shutdown).await?;
            }
            Ok(())
        })
    }

    fn live(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.live.subscribe()
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    fn dead_letters<'a>(
        &'a self,
        consumer: &'a Consumer,
    ) -> BoxFuture<'a, anyhow::Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            let conn =
                Connection::connect(self.url.expose(), ConnectionProperties::default()).await?;
            let channel = conn.create_channel().await?;
            declare_exchange(&channel, &self.names).await?;
            declare_consumer_queues(&channel, &self.names, &QueueSpec::from(consumer)).await?;
            let mut letters = Vec::new();
            let mut tags = Vec::new();
            // Read without acknowledging, then give everything back untouched.
            while let Some(message) = channel
                .basic_get(
                    s(&self.names.dead(consumer.name)),
                    BasicGetOptions::default(),
                )
                .await?
            {
                let delivery = message.delivery;
                let last_error = delivery
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get(&s(ERROR_HEADER)).cloned())
                    .map(|v| match v {
                        AMQPValue::LongString(text) => text.to_string(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                if let Ok(envelope) = Envelope::decode(delivery.data.as_slice()) {
                    letters.push(DeadLetter {
                        envelope,
                        attempts: attempt_of(&delivery.properties).saturating_sub(1),
                        last_error,
                    });
                }
                tags.push(delivery);
            }
            for delivery in tags {
                delivery
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
            }
            let _ = conn.close(200, s("done")).await;
            Ok(letters)
        })
    }

    fn redrive<'a>(&'a self, consumer: &'a Consumer) -> BoxFuture<'a, anyhow::Result<u64>> {
        Box::pin(async move {
            let conn =
                Connection::connect(self.url.expose(), ConnectionProperties::default()).await?;
            let channel = conn.create_channel().await?;
            declare_exchange(&channel, &self.names).await?;
            declare_consumer_queues(&channel, &self.names, &QueueSpec::from(consumer)).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            // Only what is dead now: a redriven event that fails again comes back
            // to this queue while the loop runs, and must wait for the next redrive.
            let waiting = channel
                .queue_declare(
                    s(&self.names.dead(consumer.name)),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?
                .message_count();
            let mut moved = 0;
            while moved < u64::from(waiting)
                && let Some(message) = channel
                    .basic_get(
                        s(&self.names.dead(consumer.name)),
                        BasicGetOptions::default(),
                    )
                    .await?
            {
                let delivery = message.delivery;
                let confirm = channel
                    .basic_publish(
                        s(""),
                        s(&self.names.work(consumer.name)),
                        BasicPublishOptions::default(),
                        &delivery.data,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                if !confirm.is_ack() {
                    delivery
                        .reject(BasicRejectOptions { requeue: true })
                        .await?;
                    anyhow::bail!("the broker refused a redriven event");
                }
                delivery.ack(BasicAckOptions::default()).await?;
                moved += 1;
            }
            let _ = conn.close(200, s("done")).await;
            Ok(moved)
        })
    }
}
