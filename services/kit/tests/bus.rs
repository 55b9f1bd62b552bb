//! The buses against real parts: the in-process bus on SQLite, and RabbitMQ (when
//! `AGORA_TEST_AMQP_URL` is set) — including the broker going away while events
//! are being written, a poison message among good ones, and redelivery.
//!
//! Every test uses its own event types and consumer names, so tests sharing the
//! broker's `agora.events` exchange never see each other's messages.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_kit::config::{DatabaseTarget, Secret, ServiceName};
use agora_kit::db::{Db, Migrations};
use agora_kit::events::bus::BoxFuture;
use agora_kit::events::memory::MemoryBus;
use agora_kit::events::rabbit::RabbitBus;
use agora_kit::events::relay::{self, Wake};
use agora_kit::events::{self, Bus, Consumer, Envelope, HandleError, Handler, RetryPolicy, outbox};
use agora_proto::events::v1::UserFollowed;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const OUTBOX: Migrations = Migrations {
    sqlite: &[(
        1,
        "outbox",
        "CREATE TABLE outbox (id TEXT PRIMARY KEY, type TEXT NOT NULL, envelope BLOB NOT NULL, \
         created_at BIGINT NOT NULL, sent_at BIGINT)",
    )],
    postgres: &[],
};

async fn sqlite(name: &str) -> Db {
    let path = std::env::temp_dir().join(format!("agora-bus-{name}-{}.db", uuid::Uuid::now_v7()));
    let db = Db::connect(&DatabaseTarget::Sqlite(path), ServiceName::Notification)
        .await
        .unwrap();
    db.migrate(&OUTBOX).await.unwrap();
    db
}

fn amqp_url() -> Option<Secret> {
    std::env::var("AGORA_TEST_AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

/// Records what it saw; fails events whose follower id starts with `poison`,
/// and fails the first `flaky` deliveries of each event with a retryable error.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
    attempts: Mutex<std::collections::HashMap<String, u32>>,
    flaky: u32,
}

impl Handler for Recorder {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let payload: UserFollowed = events::payload(envelope)?;
            let attempt = {
                let mut attempts = self.attempts.lock().unwrap();
                let n = attempts.entry(envelope.id.clone()).or_default();
                *n += 1;
                *n
            };
            if payload.follower_id.starts_with("poison") {
                return Err(HandleError::Retry(anyhow::anyhow!(
                    "cannot handle {}",
                    payload.follower_id
                )));
            }
            if attempt <= self.flaky {
                return Err(HandleError::Retry(anyhow::anyhow!("flaky")));
            }
            self.seen.lock().unwrap().push(payload.follower_id);
            Ok(())
        })
    }
}

fn event(kind: &str, follower: &str) -> Envelope {
    events::envelope(
        kind,
        "test",
        &UserFollowed {
            follower_id: follower.to_owned(),
            followee_id: "x".into(),
        },
    )
}

async fn write_events(db: &Db, kind: &str, names: impl IntoIterator<Item = String>, wake: &Wake) {
    let mut tx = db.pool().begin().await.unwrap();
    for name in names {
        outbox::enqueue(&mut tx, &event(kind, &name)).await.unwrap();
    }
    tx.commit().await.unwrap();
    wake.notify_one();
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn consumer(name: &'static str, binding: &'static str, handler: Arc<Recorder>, db: Db) -> Consumer {
    Consumer {
        name,
        bindings: vec![binding],
        handler,
        db,
        retry: RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(100),
        },
    }
}

/// Deletes a test consumer's queues from the broker.
async fn remove_queues(url: &Secret, consumer: &str) {
    use lapin::options::QueueDeleteOptions;
    let Ok(conn) =
        lapin::Connection::connect(url.expose(), lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(channel) = conn.create_channel().await else {
        return;
    };
    let mut queues = vec![
        format!("agora-test.{consumer}"),
        format!("agora-test.{consumer}.dead"),
    ];
    queues.extend((1..10).map(|n| format!("agora-test.{consumer}.retry.{n}")));
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A flaky handler is retried until it succeeds; a poison message ends as a dead
/// letter after its attempts while the others keep flowing; redrive brings it back.
async fn retries_dead_letters_and_redrive(bus: Arc<dyn Bus>, consumer_db: Db, tag: &str) {
    let kind = leak(format!("test.{tag}.followed"));
    let binding = leak(format!("test.{tag}.*"));
    let name = leak(format!("test-{tag}"));
    let recorder = Arc::new(Recorder {
        flaky: 1,
        ..Recorder::default()
    });
    let shutdown = CancellationToken::new();
    let consumer = consumer(name, binding, recorder.clone(), consumer_db);
    bus.start_consumer(consumer.clone(), shutdown.clone())
        .await
        .unwrap();
    eventually("the bus to connect", || bus.is_healthy()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let batch: Vec<Envelope> = ["a", "poison-1", "b", "c"]
        .iter()
        .map(|n| event(kind, n))
        .collect();
    bus.publish(&batch).await.unwrap();

    eventually("the good events", || {
        recorder.seen.lock().unwrap().len() == 3
    })
    .await;
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = bus.dead_letters(&consumer).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    let poisoned: UserFollowed = events::payload(&dead[0].envelope).unwrap();
    assert_eq!(poisoned.follower_id, "poison-1");
    assert_eq!(
        recorder.attempts.lock().unwrap()[&dead[0].envelope.id],
        3,
        "three attempts"
    );
    assert_eq!(
        recorder.attempts.lock().unwrap()[&batch[0].id],
        2,
        "flaky: failed once, then passed"
    );

    assert_eq!(bus.redrive(&consumer).await.unwrap(), 1);
    eventually("the redriven event to be tried again", || {
        recorder.attempts.lock().unwrap()[&batch[1].id] > 3
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn the_in_process_bus_retries_dead_letters_and_redrives() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(vec![]));
    retries_dead_letters_and_redrive(bus, sqlite("memory").await, "mem").await;
}

#[tokio::test]
async fn rabbitmq_retries_dead_letters_and_redrives() {
    let Some(url) = amqp_url() else {
        eprintln!("AGORA_TEST_AMQP_URL not set: RabbitMQ case skipped");
        return;
    };
    let shutdown = CancellationToken::new();
    let bus: Arc<dyn Bus> =
        RabbitBus::start(url, "agora-test", vec![], vec![], shutdown.clone()).await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    retries_dead_letters_and_redrive(bus, sqlite("rabbit").await, &tag).await;
    shutdown.cancel();
    remove_queues(&amqp_url().unwrap(), &format!("test-{tag}")).await;
}

/// A TCP proxy to the broker that the test can cut and restore.
struct Cable {
    addr: std::net::SocketAddr,
    cut: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Cable {
    async fn to(target: &str) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = Arc::new(cut);
        let target = target.to_owned();
        let state = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *state.borrow() {
                    continue; // refused while cut: dropped at once
                }
                let target = target.clone();
                let mut watch = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Cable { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

#[tokio::test]
async fn events_written_while_the_broker_is_away_are_all_delivered_after_it_returns() {
    let Some(url) = amqp_url() else {
        eprintln!("AGORA_TEST_AMQP_URL not set: RabbitMQ case skipped");
        return;
    };
    let broker = url
        .expose()
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    let cable = Cable::to(&broker).await;
    let via_cable = Secret::new(url.expose().replace(&broker, &cable.addr.to_string()));
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let kind = leak(format!("test.{tag}.followed"));
    let binding = leak(format!("test.{tag}.*"));
    let name = leak(format!("test-{tag}"));
    let shutdown = CancellationToken::new();

    // The consumer talks to the broker directly; only the producer's cable is cut.
    let consumer_bus = RabbitBus::start(url, "agora-test", vec![], vec![], shutdown.clone()).await;
    let recorder = Arc::new(Recorder::default());
    consumer_bus
        .start_consumer(
            consumer(name, binding, recorder.clone(), sqlite("consumer").await),
            shutdown.clone(),
        )
        .await
        .unwrap();
    let producer_bus: Arc<dyn Bus> =
        RabbitBus::start(via_cable, "agora-test", vec![], vec![], shutdown.clone()).await;
    eventually("both buses to connect", || {
        consumer_bus.is_healthy() && producer_bus.is_healthy()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = sqlite("producer").await;
    let wake = Wake::default();
    tokio::spawn(relay::run(
        "test",
        db.clone(),
        producer_bus.clone(),
        wake.clone(),
        shutdown.clone(),
    ));

    write_events(&db, kind, (0..50).map(|i| format!("before-{i}")), &wake).await;
    cable.set_cut(true);
    eventually("the producer to notice the outage", || {
        !producer_bus.is_healthy()
    })
    .await;
    write_events(&db, kind, (0..50).map(|i| format!("during-{i}")), &wake).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        relay::depth(&db).await.unwrap() > 0,
        "events wait in the outbox"
    );
    cable.set_cut(false);
    write_events(&db, kind, (0..50).map(|i| format!("after-{i}")), &wake).await;

    eventually("every event to arrive", || {
        recorder
            .seen
            .lock()
            .unwrap()
            .iter()
            .collect::<HashSet<_>>()
            .len()
            == 150
    })
    .await;
    assert_eq!(relay::depth(&db).await.unwrap(), 0);
    shutdown.cancel();
    remove_queues(&amqp_url().unwrap(), name).await;
}

#[tokio::test]
async fn live_fan_out_reaches_every_replica() {
    let Some(url) = amqp_url() else {
        eprintln!("AGORA_TEST_AMQP_URL not set: RabbitMQ case skipped");
        return;
    };
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let kind = leak(format!("test.{tag}.live"));
    let shutdown = CancellationToken::new();
    let one = RabbitBus::start(
        url.clone(),
        "agora-test",
        vec![],
        vec![kind],
        shutdown.clone(),
    )
    .await;
    let two = RabbitBus::start(url, "agora-test", vec![], vec![kind], shutdown.clone()).await;
    let mut rx_one = one.live();
    let mut rx_two = two.live();
    eventually("both replicas to connect", || {
        one.is_healthy() && two.is_healthy()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent = event(kind, "live");
    one.publish(std::slice::from_ref(&sent)).await.unwrap();

    for rx in [&mut rx_one, &mut rx_two] {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("within five seconds")
            .unwrap();
        assert_eq!(got.id, sent.id);
    }
    shutdown.cancel();
}

/// Keys events by their follower's first letter; events of `slow…` followers take
/// 300 ms each.
#[derive(Default)]
struct Lanes {
    seen: Mutex<Vec<String>>,
}

impl Handler for Lanes {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let payload: UserFollowed = events::payload(envelope)?;
            if payload.follower_id.starts_with("slow") {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            self.seen.lock().unwrap().push(payload.follower_id);
            Ok(())
        })
    }

    fn order_key(&self, envelope: &Envelope) -> u64 {
        events::payload::<UserFollowed>(envelope)
            .ok()
            .and_then(|p| p.follower_id.bytes().next())
            .map_or(0, u64::from)
    }
}

#[tokio::test]
async fn rabbitmq_keeps_order_within_a_key_while_other_keys_go_ahead() {
    let Some(url) = amqp_url() else {
        eprintln!("AGORA_TEST_AMQP_URL not set: RabbitMQ case skipped");
        return;
    };
    let shutdown = CancellationToken::new();
    let bus: Arc<dyn Bus> =
        RabbitBus::start(url, "agora-test", vec![], vec![], shutdown.clone()).await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let kind = leak(format!("test.{tag}.followed"));
    let name = leak(format!("test-{tag}"));
    let lanes = Arc::new(Lanes::default());
    let consumer = Consumer {
        name,
        bindings: vec![leak(format!("test.{tag}.*"))],
        handler: lanes.clone(),
        db: sqlite("lanes").await,
        retry: RetryPolicy::default(),
    };
    bus.start_consumer(consumer, shutdown.clone())
        .await
        .unwrap();
    eventually("the bus to connect", || bus.is_healthy()).await;

    let names = ["slow-1", "slow-2", "slow-3", "fast-1", "fast-2", "fast-3"];
    let batch: Vec<Envelope> = names.iter().map(|n| event(kind, n)).collect();
    bus.publish(&batch).await.unwrap();
    eventually("every event", || lanes.seen.lock().unwrap().len() == 6).await;

    let seen = lanes.seen.lock().unwrap().clone();
    let position = |n: &str| seen.iter().position(|s| s == n).unwrap();
    assert!(position("slow-1") < position("slow-2") && position("slow-2") < position("slow-3"));
    assert!(position("fast-1") < position("fast-2") && position("fast-2") < position("fast-3"));
    assert!(
        position("fast-3") < position("slow-1"),
        "the fast key waited behind the slow one: {seen:?}"
    );
    shutdown.cancel();
    remove_queues(&amqp_url().unwrap(), name).await;
}
