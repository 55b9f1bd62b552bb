//! `agora events dlq`: the dead letters of every bus consumer, listed or put back
//! in their work queue, on whichever bus the configuration names.

use std::sync::Arc;

use agora_kit::Config;
use agora_kit::events::bus::{BoxFuture, DeadLetter};
use agora_kit::events::memory::MemoryBus;
use agora_kit::events::rabbit::RabbitBus;
use agora_kit::events::{Bus, Consumer, Envelope, HandleError, Handler};

use crate::app::{CONSUMERS, ConsumerSpec};

/// Listing and redriving never run a handler.
struct Inspecting;

impl Handler for Inspecting {
    fn handle<'a>(&'a self, _: &'a Envelope) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async { Err(HandleError::Poison("inspection only".into())) })
    }
}

/// The consumers `name` selects: one by name, or all of them.
pub fn select(name: Option<&str>) -> anyhow::Result<Vec<&'static ConsumerSpec>> {
    match name {
        None => Ok(CONSUMERS.iter().collect()),
        Some(name) => CONSUMERS
            .iter()
            .find(|c| c.name == name)
            .map(|c| vec![c])
            .ok_or_else(|| {
                let known: Vec<_> = CONSUMERS.iter().map(|c| c.name).collect();
                anyhow::anyhow!("no consumer {name:?}; the consumers are {known:?}")
            }),
    }
}

/// A bus to inspect with, and the consumer as that bus knows it.
async fn open(
    config: &Config,
    spec: &ConsumerSpec,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<(Arc<dyn Bus>, Consumer)> {
    let db = crate::app::open_db(config, spec.service).await?;
    let consumer = Consumer {
        name: spec.name,
        bindings: (spec.bindings)(),
        handler: Arc::new(Inspecting),
        db,
        retry: spec.retry,
    };
    let bus: Arc<dyn Bus> = match &config.amqp_url {
        Some(url) => {
            RabbitBus::start(
                url.clone(),
                &config.amqp_namespace,
                vec![],
                vec![],
                shutdown.clone(),
            )
            .await
        }
        None => Arc::new(MemoryBus::new(vec![])),
    };
    Ok((bus, consumer))
}

/// The dead letters of each selected consumer.
pub async fn list(
    config: &Config,
    name: Option<&str>,
) -> anyhow::Result<Vec<(&'static str, Vec<DeadLetter>)>> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut out = Vec::new();
    for spec in select(name)? {
        let (bus, consumer) = open(config, spec, &shutdown).await?;
        out.push((spec.name, bus.dead_letters(&consumer).await?));
        consumer.db.pool().close().await;
    }
    shutdown.cancel();
    Ok(out)
}

/// Puts each selected consumer's dead letters back in its queue; how many each.
pub async fn redrive(
    config: &Config,
    name: Option<&str>,
) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut out = Vec::new();
    for spec in select(name)? {
        let (bus, consumer) = open(config, spec, &shutdown).await?;
        out.push((spec.name, bus.redrive(&consumer).await?));
        consumer.db.pool().close().await;
    }
    shutdown.cancel();
    Ok(out)
}
