//! Starting targets: open databases, bind listeners, wire services together, and
//! serve until the shutdown token is cancelled. Listeners bound to port 0 report
//! their real address, so tests start the app exactly as production does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use agora_kit::config::{Config, DatabaseTarget, ServiceName};
use agora_kit::events::Bus;
use agora_kit::events::RetryPolicy;
use agora_kit::events::memory::MemoryBus;
use agora_kit::events::rabbit::{QueueSpec, RabbitBus};
use agora_kit::events::relay::Wake;
use agora_kit::revocation::Revocations;
use agora_kit::server::GrpcServer;
use agora_kit::token::{GrpcJwks, TokenVerifier};
use agora_kit::upstream::{LocalServices, Upstreams};
use agora_proto::auth::v1::auth_internal_service_server::AuthInternalServiceServer;
use agora_proto::auth::v1::auth_service_server::AuthServiceServer;
use agora_proto::notification::v1::notification_service_server::NotificationServiceServer;
use agora_proto::post::v1::post_service_server::PostServiceServer;
use agora_proto::user::v1::user_internal_service_server::UserInternalServiceServer;
use agora_proto::user::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Every service and the gateway (the embedded default).
    All,
    User,
    Auth,
    Post,
    Notification,
    Gateway,
}

impl Target {
    fn runs(self, service: ServiceName) -> bool {
        matches!(
            (self, service),
            (Target::All, _)
                | (Target::User, ServiceName::User)
                | (Target::Auth, ServiceName::Auth)
                | (Target::Post, ServiceName::Post)
                | (Target::Notification, ServiceName::Notification)
        )
    }

    fn runs_gateway(self) -> bool {
        matches!(self, Target::All | Target::Gateway)
    }

    fn runs_any_service(self) -> bool {
        self != Target::Gateway
    }
}

/// A started process: its bound addresses and its tasks.
pub struct RunningApp {
    /// Where REST, gRPC-web and gRPC pass-through answer, when the gateway runs.
    pub http_addr: Option<SocketAddr>,
    /// Where the services answer gRPC, when any runs.
    pub grpc_addr: Option<SocketAddr>,
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
    /// Closes the bus only after everything else stopped, so the relays' last
    /// round and in-flight deliveries still have a connection.
    bus_shutdown: CancellationToken,
}

impl RunningApp {
    /// Waits until every server has stopped; the first failure stops the rest.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(err) = outcome {
                self.shutdown.cancel();
                if result.is_ok() {
                    result = Err(err);
                }
            }
        }
        self.bus_shutdown.cancel();
        result
    }
}

/// Opens every database the target owns, creating schemas and running migrations.
pub async fn migrate(config: &Config, target: Target) -> anyhow::Result<()> {
    for service in ServiceName::ALL.into_iter().filter(|s| target.runs(*s)) {
        let db = open_db(config, service).await?;
        db.pool().close().await;
        tracing::info!(%service, "migrations applied");
    }
    Ok(())
}

pub(crate) async fn open_db(
    config: &Config,
    service: ServiceName,
) -> anyhow::Result<agora_kit::db::Db> {
    let target = config.database(service);
    let db = match service {
        ServiceName::User => agora_user::open_db(target).await?,
        ServiceName::Auth => agora_auth::open_db(target).await?,
        ServiceName::Post => agora_post::open_db(target).await?,
        ServiceName::Notification => agora_notification::open_db(target).await?,
    };
    Ok(db)
}

/// Event types every replica hears about, for its live streams.
const LIVE_BINDINGS: [&str; 14] = [
    // Every replica's token verifier (ADR 11).
    agora_kit::events::types::SESSIONS_REVOKED,
    agora_kit::events::types::USER_ROLE_CHANGED,
    agora_kit::events::types::NOTIFICATION_CREATED,
    agora_kit::events::types::COMMENT_ADDED,
    agora_kit::events::types::COMMENT_DELETED,
    // Cache invalidation on every replica of the post service.
    agora_kit::events::types::ARTICLE_PUBLISHED,
    agora_kit::events::types::ARTICLE_UPDATED,
    agora_kit::events::types::ARTICLE_DELETED,
    agora_kit::events::types::ARTICLE_FAVORITED,
    agora_kit::events::types::ARTICLE_UNFAVORITED,
    // The post service's memory of profiles and follows, on every replica.
    agora_kit::events::types::USER_UPDATED,
    agora_kit::events::types::USER_DELETED,
    agora_kit::events::types::USER_FOLLOWED,
    agora_kit::events::types::USER_UNFOLLOWED,
];

/// A durable bus consumer: its queue, the events it binds, how it retries, and
/// the service whose database it works in. One list for the topology, `agora
/// events dlq` and the tests' clean-up.
pub struct ConsumerSpec {
    pub name: &'static str,
    pub bindings: fn() -> Vec<&'static str>,
    pub retry: RetryPolicy,
    pub service: ServiceName,
}

/// Every durable consumer.
pub const CONSUMERS: [ConsumerSpec; 3] = [
    ConsumerSpec {
        name: agora_notification::CONSUMER,
        bindings: agora_notification::bindings,
        retry: RetryPolicy::DEFAULT,
        service: ServiceName::Notification,
    },
    ConsumerSpec {
        name: agora_post::events::CONSUMER,
        bindings: agora_post::events::bindings,
        retry: RetryPolicy::DEFAULT,
        service: ServiceName::Post,
    },
    ConsumerSpec {
        name: agora_auth::events::CONSUMER,
        bindings: agora_auth::events::bindings,
        retry: RetryPolicy::DEFAULT,
        service: ServiceName::Auth,
    },
];

/// RabbitMQ when configured; otherwise the in-process bus, which only links
/// services living in this process.
async fn start_bus(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match &config.amqp_url {
        Some(url) => {
            // Every process declares every consumer's queues, so an event
            // published before its consumer first ran still waits for it.
            let topology = CONSUMERS
                .iter()
                .map(|c| QueueSpec {
                    name: c.name,
                    bindings: (c.bindings)(),
                    retry: c.retry,
                })
                .collect();
            RabbitBus::start(
                url.clone(),
                &config.amqp_namespace,
                topology,
                LIVE_BINDINGS.to_vec(),
                shutdown.clone(),
            )
            .await
        }
        None => Arc::new(MemoryBus::new(LIVE_BINDINGS.to_vec())),
    })
}

/// Starts the outbox relay of a producing service; the store pokes the returned
/// handle after each commit that wrote events.
///
/// Relays begin once `consumers_ready` is cancelled: the in-process bus delivers
/// only to consumers registered when an event is published, and a restart may
/// find unsent rows waiting.
fn relay(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    service: ServiceName,
    db: &agora_kit::db::Db,
    bus: &Arc<dyn Bus>,
    consumers_ready: &CancellationToken,
    shutdown: &CancellationToken,
) -> Wake {
    let wake = Wake::default();
    let ready = consumers_ready.clone();
    let run = agora_kit::events::relay::run(
        service.as_str(),
        db.clone(),
        bus.clone(),
        wake.clone(),
        shutdown.clone(),
    );
    tasks.spawn(async move {
        ready.cancelled().await;
        run.await;
        Ok(())
    });
    wake
}

/// Binds and starts `target`; the returned app runs until `shutdown` is cancelled.
pub async fn start(
    config: Config,
    notification_config: agora_notification::NotificationConfig,
    target: Target,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningApp> {
    if config.amqp_url.is_none() && !matches!(target, Target::All | Target::Gateway) {
        anyhow::bail!(
            "--target {target:?} needs AGORA_AMQP_URL: without a broker, events cannot leave this process"
        );
    }
    let mut tasks = JoinSet::new();

    let grpc_listener = if target.runs_any_service() {
        Some(
            TcpListener::bind(config.grpc_addr)
                .await
                .map_err(|e| anyhow::anyhow!("binding gRPC on {}: {e}", config.grpc_addr))?,
        )
    } else {
        None
    };
    let grpc_addr = grpc_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    // Services this process runs are called in process, not over its own socket.
    let local = LocalServices::default();
    let runs = |service| target.runs(service);
    let upstreams = Upstreams::new(
        &config,
        grpc_addr.unwrap_or(config.grpc_addr),
        Some((&local, &runs)),
    )?;
    // One list per process, shared by every verifier in it (ADR 11).
    let revocations = Revocations::new(Revocations::window(config.access_token_ttl));
    let verifier = TokenVerifier::new(
        GrpcJwks::new(upstreams.auth.clone()),
        &config.jwt_issuer,
        &config.jwt_audience,
        revocations.clone(),
    );
    let bus_shutdown = CancellationToken::new();
    let bus = start_bus(&config, &bus_shutdown).await?;
    let consumers_ready = CancellationToken::new();

    if let Some(listener) = grpc_listener {
        let mut server = GrpcServer::new().with_bus(bus.clone());
        if target.runs(ServiceName::Notification) {
            let db = open_db(&config, ServiceName::Notification).await?;
            let wake = relay(
                &mut tasks,
                ServiceName::Notification,
                &db,
                &bus,
                &consumers_ready,
                &shutdown,
            );
            let parts = agora_notification::start(
                db.clone(),
                notification_config.clone(),
                config.data_dir.clone(),
                verifier.clone(),
                bus.live(),
                wake,
                shutdown.clone(),
            )
            .await?;
            bus.start_consumer(parts.consumer(), shutdown.clone())
                .await?;
            server = server.register(
                agora_kit::message_limits!(NotificationServiceServer::new(parts.api)),
                db,
            );
        }
        if target.runs(ServiceName::User) {
            let db = open_db(&config, ServiceName::User).await?;
            let wake = relay(
                &mut tasks,
                ServiceName::User,
                &db,
                &bus,
                &consumers_ready,
                &shutdown,
            );
            let (public, internal) = agora_user::api::services(
                agora_user::store::Store::new(db.clone(), wake),
                agora_user::password::Hasher::new(config.password_hash_concurrency),
                verifier.clone(),
                config.admin_email.clone(),
            );
            server = server
                .register(
                    agora_kit::message_limits!(UserServiceServer::new(public)),
                    db.clone(),
                )
                .register(
                    agora_kit::message_limits!(UserInternalServiceServer::new(internal)),
                    db,
                );
        }
        if target.runs(ServiceName::Auth) {
            let db = open_db(&config, ServiceName::Auth).await?;
            // Only the single-process SQLite setup may invent its own key: replicas
            // of a production auth service must share keys from a secret.
            let embedded = matches!(
                config.database(ServiceName::Auth),
                DatabaseTarget::Sqlite(_)
            );
            let keys = Arc::new(agora_auth::KeyRing::load(&config.auth_keys_dir, embedded)?);
            let local_verifier = TokenVerifier::new(
                agora_auth::keys::LocalJwks(keys.clone()),
                &config.jwt_issuer,
                &config.jwt_audience,
                revocations.clone(),
            );
            let wake = relay(
                &mut tasks,
                ServiceName::Auth,
                &db,
                &bus,
                &consumers_ready,
                &shutdown,
            );
            let store = agora_auth::store::Store::new(db.clone(), wake);
            let handler = Arc::new(agora_auth::events::EventHandler::new(store.clone()));
            bus.start_consumer(handler.consumer(), shutdown.clone())
                .await?;
            // Ended sessions stay a day (for the session list's history and
            // ListRevocations), handled event ids a week.
            let keep = Revocations::window(config.access_token_ttl)
                .max(std::time::Duration::from_secs(86_400));
            tasks.spawn({
                let prune = store.clone().prune_forever(keep, shutdown.clone());
                async move {
                    prune.await;
                    Ok(())
                }
            });
            tokio::spawn(agora_kit::events::inbox::prune_forever(
                db.clone(),
                shutdown.clone(),
            ));
            let internal = agora_auth::AuthInternalApi::new(
                store.clone(),
                Revocations::window(config.access_token_ttl),
            );
            let api = agora_auth::AuthApi::new(
                store,
                keys,
                agora_auth::tokens::Minter {
                    issuer: config.jwt_issuer.clone(),
                    audience: config.jwt_audience.clone(),
                    access_ttl: config.access_token_ttl,
                },
                agora_auth::store::SessionLimits {
                    sliding: config.refresh_token_ttl,
                    absolute: config.session_max_lifetime,
                },
                upstreams.user.clone(),
                local_verifier,
            );
            server = server
                .register(
                    agora_kit::message_limits!(AuthServiceServer::new(api)),
                    db.clone(),
                )
                .register(
                    agora_kit::message_limits!(AuthInternalServiceServer::new(internal)),
                    db,
                );
        }
        if target.runs(ServiceName::Post) {
            let db = open_db(&config, ServiceName::Post).await?;
            let wake = relay(
                &mut tasks,
                ServiceName::Post,
                &db,
                &bus,
                &consumers_ready,
                &shutdown,
            );
            let store = agora_post::store::Store::new(db.clone(), wake);
            let authors = agora_post::authors::Authors::new(db.clone(), upstreams.user.clone());
            let handler = Arc::new(agora_post::events::EventHandler::new(
                store.clone(),
                authors.clone(),
            ));
            bus.start_consumer(handler.consumer(db.clone()), shutdown.clone())
                .await?;
            let api = agora_post::PostApi::new(
                store,
                authors,
                verifier.clone(),
                bus.live(),
                shutdown.clone(),
            );
            server = server.register(agora_kit::message_limits!(PostServiceServer::new(api)), db);
        }
        // The serving task owns the in-process stack: it goes when serving stops.
        let stack = Arc::new(server.in_process());
        local.bind(&stack);
        consumers_ready.cancel();
        tasks.spawn({
            let follow = agora_kit::revocation::follow(
                revocations,
                bus.live(),
                upstreams.auth.clone(),
                shutdown.clone(),
            );
            async move {
                follow.await;
                Ok(())
            }
        });
        tracing::info!(addr = %listener.local_addr()?, ?target, "gRPC serving");
        let serve = server.serve(listener, shutdown.clone());
        tasks.spawn(async move {
            let served = serve.await;
            drop(stack);
            served
        });
    }

    // Metrics on a port of their own, for every target: what they reveal (routes,
    // rates, error counts) is for the operator, not for the public port.
    if let Some(addr) = config.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding metrics on {addr}: {e}"))?;
        let handle = agora_gateway::metrics::install();
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { agora_gateway::metrics::exposition(&handle) }
            }),
        );
        let token = shutdown.clone();
        tracing::info!(%addr, "metrics serving");
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await?;
            Ok(())
        });
    }

    let mut http_addr = None;
    if target.runs_gateway() {
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding HTTP on {}: {e}", config.http_addr))?;
        http_addr = Some(listener.local_addr()?);
        let upstream_map: HashMap<String, agora_kit::upstream::Upstream> = ServiceName::ALL
            .into_iter()
            .map(|s| (s.proto_package().to_owned(), upstreams.get(s).clone()))
            .collect();
        let gateway = agora_gateway::GatewayConfig {
            upstreams: upstream_map,
            cors_origins: config.cors_origins.clone(),
            body_limit_bytes: config.body_limit_bytes,
            request_timeout: config.request_timeout,
            rate_limit_per_second: config.rate_limit_per_second,
            auth_rate_limit_per_minute: config.auth_rate_limit_per_minute,
            trusted_proxies: config.trusted_proxies.clone(),
            ..agora_gateway::GatewayConfig::default()
        };
        tracing::info!(addr = %listener.local_addr()?, "HTTP gateway serving");
        let token = shutdown.clone();
        tasks.spawn(async move {
            agora_gateway::serve(listener, gateway, async move { token.cancelled().await }).await
        });
    }

    Ok(RunningApp {
        http_addr,
        grpc_addr,
        tasks,
        shutdown,
        bus_shutdown,
    })
}
