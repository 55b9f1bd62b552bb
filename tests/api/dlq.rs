//! `agora events dlq` reaches the dead letters of every consumer (notification,
//! post and auth), on RabbitMQ, where a poison event is dead-lettered at once.

use std::time::Duration;

use agora_kit::Config;
use agora_kit::events::{Bus as _, types};
use agora_proto::events::v1::UserFollowed;

use crate::helpers;

#[tokio::test]
async fn every_consumers_dead_letters_are_listed_and_redriven() {
    if helpers::postgres_url().is_none() || helpers::amqp_url().is_none() {
        eprintln!("AGORA_TEST_DATABASE_URL or AGORA_TEST_AMQP_URL not set: dlq case skipped");
        return;
    }
    let namespace = format!("agora-test-{}", uuid::Uuid::now_v7().simple());
    let mut app = helpers::spawn_on_rabbitmq(&namespace).await;
    let config = Config::from_source(|k| app.env.get(k).cloned()).unwrap();
    // A `user.deleted` carrying another event's payload: every consumer bound to
    // it finds it undecodable and dead-letters it without retrying.
    let poison = agora_kit::events::envelope(types::USER_DELETED, "test", &UserFollowed::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let bus = agora_kit::events::rabbit::RabbitBus::start(
        config.amqp_url.clone().unwrap(),
        &namespace,
        vec![],
        vec![],
        shutdown.clone(),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !bus.is_healthy() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bus never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus.publish(std::slice::from_ref(&poison)).await.unwrap();

    let listed = loop {
        let listed = agora::dlq::list(&config, None).await.unwrap();
        let dead_in = |name: &str| {
            listed.iter().any(|(n, letters)| {
                *n == name && letters.iter().any(|l| l.envelope.id == poison.id)
            })
        };
        if ["notification", "post", "auth"].iter().all(|n| dead_in(n)) {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dead-lettered by every consumer: {:?}",
            listed.iter().map(|(n, l)| (n, l.len())).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let moved = agora::dlq::redrive(&config, Some("post")).await.unwrap();
    let unknown = agora::dlq::list(&config, Some("nobody")).await;

    assert_eq!(listed.len(), agora::CONSUMERS.len());
    assert_eq!(moved, vec![("post", 1)]);
    assert!(unknown.is_err());
    shutdown.cancel();
    app.stop().await;
    helpers::remove_namespace(&namespace).await;
}
