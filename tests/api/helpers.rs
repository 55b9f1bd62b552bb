//! `TestApp`: a whole agora process started on port 0 with a fresh data directory
//! (SQLite) or a fresh PostgreSQL database, and one helper per endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use agora::{RunningApp, Target};
use agora_kit::Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// PostgreSQL admin URL for tests, when the machine has one.
pub fn postgres_url() -> Option<String> {
    std::env::var("AGORA_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// A running agora and a client for it.
pub struct TestApp {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    pub env: HashMap<String, String>,
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: CancellationToken,
    running: Option<RunningApp>,
    /// The service targets behind a split gateway ([`spawn_split`]).
    services: Vec<RunningApp>,
}

/// A decoded HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub raw: Bytes,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).await
    }

    /// Starts agora with extra environment on top of the test defaults.
    pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
        let data_dir = std::env::temp_dir().join(format!("agora-test-{}", uuid::Uuid::now_v7()));
        let mut env: HashMap<String, String> = [
            ("AGORA_DATA_DIR", data_dir.display().to_string()),
            ("AGORA_HTTP_ADDR", "127.0.0.1:0".into()),
            ("AGORA_GRPC_ADDR", "127.0.0.1:0".into()),
            ("AGORA_METRICS_ADDR", "127.0.0.1:0".into()),
            ("AGORA_RATE_LIMIT_PER_SECOND", "10000".into()),
            ("AGORA_AUTH_RATE_LIMIT_PER_MINUTE", "10000".into()),
            ("AGORA_ADMIN_EMAIL", "root@agora.test".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if backend == Backend::Postgres {
            let url = fresh_postgres_database().await;
            env.insert("AGORA_DATABASE_URL".into(), url);
            // Production refuses to invent signing keys; give this one a key ring.
            let keys = data_dir.join("keys");
            agora_auth::keys::generate(&keys).expect("generate a test key");
            env.insert("AGORA_AUTH_KEYS_DIR".into(), keys.display().to_string());
        }
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        Self::start(env, data_dir).await
    }

    async fn start(env: HashMap<String, String>, data_dir: PathBuf) -> TestApp {
        let config = Config::from_source(|k| env.get(k).cloned()).expect("test config is valid");
        let notification =
            agora_notification::NotificationConfig::from_source(|k| env.get(k).cloned())
                .expect("test notification config is valid");
        let shutdown = CancellationToken::new();
        let running = agora::start(config, notification, Target::All, shutdown.clone())
            .await
            .expect("agora starts");
        TestApp {
            http: running.http_addr.expect("gateway runs"),
            grpc: running.grpc_addr.expect("services run"),
            data_dir,
            env,
            client: Client::builder(TokioExecutor::new()).build_http(),
            shutdown,
            running: Some(running),
            services: Vec::new(),
        }
    }

    /// Stops this process and starts a new one on the same data.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let mut env = self.env.clone();
        env.insert("AGORA_HTTP_ADDR".into(), "127.0.0.1:0".into());
        Self::start(env, self.data_dir.clone()).await
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.expect("clean shutdown");
        }
        for service in self.services.drain(..) {
            service.wait().await.expect("clean shutdown");
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Any request; `body` is sent raw.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.http, path));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            builder = builder.header("content-type", "application/json");
        }
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Token {token}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let response = self
            .client
            .request(builder.body(Full::new(body.into())).unwrap())
            .await
            .expect("request reaches the gateway");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.into_body().collect().await.unwrap().to_bytes();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        };
        Answer {
            status,
            headers,
            body,
            raw,
        }
    }

    /// Starts a request and hands back the response before its body, for streams.
    pub async fn open(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<hyper::body::Incoming> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.http, path));
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Token {token}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        self.client
            .request(builder.body(Full::new(body.into())).unwrap())
            .await
            .expect("request reaches the gateway")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send("GET", path, token, &[], Bytes::new()).await
    }

    /// GETs `path` until `holds` is true of the answer, for data that other
    /// services' events bring (the post service's profile projection); panics
    /// with the last answer after a second.
    pub async fn get_until(
        &self,
        path: &str,
        token: Option<&str>,
        holds: impl Fn(&Answer) -> bool,
    ) -> Answer {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let answer = self.get(path, token).await;
            if holds(&answer) {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} did not converge within a second: {} {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.send("POST", path, token, &[], body.to_string()).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.send("PUT", path, token, &[], body.to_string()).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        self.send("DELETE", path, token, &[], Bytes::new()).await
    }

    pub async fn register(&self, username: &str, email: &str, password: &str) -> Answer {
        self.post(
            "/api/users",
            None,
            json!({"user": {"username": username, "email": email, "password": password}}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/users/login",
            None,
            json!({"user": {"email": email, "password": password}}),
        )
        .await
    }

    /// Registers `username` (email `<username>@agora.test`) and returns its tokens.
    pub async fn signed_up(&self, username: &str) -> User {
        let answer = self
            .register(username, &format!("{username}@agora.test"), "password123")
            .await;
        assert_eq!(answer.status, 201, "register {username}: {:?}", answer.body);
        User {
            token: answer.body["user"]["token"].as_str().unwrap().to_owned(),
            refresh: answer.body["user"]["refreshToken"]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }

    /// Makes `username` (already signed up) a moderator or admin, through the
    /// bootstrap admin, and returns a token that carries the role.
    pub async fn with_role(&self, user: &User, username: &str, role: &str) -> String {
        let root = match self.login("root@agora.test", "password123").await {
            a if a.status == 200 => a,
            _ => {
                self.register("root", "root@agora.test", "password123")
                    .await
            }
        };
        let root_token = root.body["user"]["token"].as_str().unwrap().to_owned();
        let changed = self
            .put(
                &format!("/api/admin/users/{username}/role"),
                Some(&root_token),
                json!({ "role": role }),
            )
            .await;
        assert_eq!(changed.status, 200, "{:?}", changed.body);
        let refreshed = self.refresh(&user.refresh).await;
        refreshed.body["token"].as_str().unwrap().to_owned()
    }

    /// Creates an article and returns its slug.
    pub async fn article(&self, token: &str, title: &str, tags: &[&str]) -> String {
        let answer = self
            .post(
                "/api/articles",
                Some(token),
                json!({"article": {"title": title, "description": "d", "body": "b", "tagList": tags}}),
            )
            .await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
        answer.body["article"]["slug"].as_str().unwrap().to_owned()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": refresh_token}),
        )
        .await
    }

    pub async fn logout(&self, refresh_token: &str) -> Answer {
        self.post(
            "/api/auth/logout",
            None,
            json!({"refreshToken": refresh_token}),
        )
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A signed-up user.
#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
    pub refresh: String,
}

/// Creates an empty database for one test and returns its URL.
async fn fresh_postgres_database() -> String {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let admin = postgres_url().expect("AGORA_TEST_DATABASE_URL is set");
    let name = format!("agora_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create a test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// RabbitMQ URL for tests, when the machine has one.
pub fn amqp_url() -> Option<String> {
    std::env::var("AGORA_TEST_AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Starts agora on PostgreSQL and RabbitMQ, with exchange and queues under a
/// namespace of its own so concurrent tests never share a queue.
pub async fn spawn_on_rabbitmq(namespace: &str) -> TestApp {
    let url = amqp_url().expect("AGORA_TEST_AMQP_URL is set");
    TestApp::spawn_with(
        Backend::Postgres,
        &[
            ("AGORA_AMQP_URL", &url),
            ("AGORA_AMQP_NAMESPACE", namespace),
        ],
    )
    .await
}

/// Starts each service target and the gateway as a server of its own, the way
/// separate processes run them, on PostgreSQL and RabbitMQ: every call between
/// them crosses a gRPC socket. The returned app talks to the gateway; its `grpc`
/// address is the post service's.
pub async fn spawn_split(namespace: &str) -> TestApp {
    let amqp = amqp_url().expect("AGORA_TEST_AMQP_URL is set");
    let data_dir = std::env::temp_dir().join(format!("agora-test-{}", uuid::Uuid::now_v7()));
    let keys = data_dir.join("keys");
    agora_auth::keys::generate(&keys).expect("generate a test key");
    let services = [
        (Target::User, "USER"),
        (Target::Auth, "AUTH"),
        (Target::Post, "POST"),
        (Target::Notification, "NOTIFICATION"),
    ];
    let mut env: HashMap<String, String> = [
        ("AGORA_DATA_DIR", data_dir.display().to_string()),
        ("AGORA_DATABASE_URL", fresh_postgres_database().await),
        ("AGORA_AUTH_KEYS_DIR", keys.display().to_string()),
        ("AGORA_AMQP_URL", amqp),
        ("AGORA_AMQP_NAMESPACE", namespace.to_owned()),
        ("AGORA_HTTP_ADDR", "127.0.0.1:0".into()),
        ("AGORA_METRICS_ADDR", "127.0.0.1:0".into()),
        ("AGORA_RATE_LIMIT_PER_SECOND", "10000".into()),
        ("AGORA_AUTH_RATE_LIMIT_PER_MINUTE", "10000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut addrs = Vec::new();
    for (_, name) in services {
        // A port the kernel just handed out and nobody holds: the targets must
        // know each other's addresses before any of them binds.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        env.insert(format!("AGORA_{name}_GRPC_URL"), format!("http://{addr}"));
        addrs.push(addr);
    }
    let shutdown = CancellationToken::new();
    let start = |target: Target, env: HashMap<String, String>| {
        let shutdown = shutdown.clone();
        async move {
            let config = Config::from_source(|k| env.get(k).cloned()).expect("valid config");
            let notification =
                agora_notification::NotificationConfig::from_source(|k| env.get(k).cloned())
                    .expect("valid notification config");
            agora::start(config, notification, target, shutdown)
                .await
                .expect("target starts")
        }
    };
    let mut running = Vec::new();
    for ((target, _), addr) in services.into_iter().zip(&addrs) {
        let mut own = env.clone();
        own.insert("AGORA_GRPC_ADDR".into(), addr.to_string());
        running.push(start(target, own).await);
    }
    let gateway = start(Target::Gateway, env.clone()).await;
    TestApp {
        http: gateway.http_addr.expect("gateway runs"),
        grpc: addrs[2],
        data_dir,
        env,
        client: Client::builder(TokioExecutor::new()).build_http(),
        shutdown,
        running: Some(gateway),
        services: running,
    }
}

/// Deletes what a test namespace declared on the broker.
pub async fn remove_namespace(namespace: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let url = amqp_url().expect("AGORA_TEST_AMQP_URL is set");
    let Ok(conn) = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(channel) = conn.create_channel().await else {
        return;
    };
    let mut queues = Vec::new();
    for consumer in agora::CONSUMERS.iter().map(|c| c.name) {
        queues.push(format!("{namespace}.{consumer}"));
        queues.push(format!("{namespace}.{consumer}.dead"));
        queues.extend((1..10).map(|n| format!("{namespace}.{consumer}.retry.{n}")));
    }
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(
            format!("{namespace}.events").as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
}

/// Runs a test body on the embedded default (SQLite, in-process bus) and, when
/// both are configured, on PostgreSQL with RabbitMQ.
#[macro_export]
macro_rules! on_every_bus {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await).await;
                }
            )*
        }
        mod rabbitmq {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::helpers::postgres_url().is_none() || $crate::helpers::amqp_url().is_none() {
                        eprintln!("AGORA_TEST_DATABASE_URL or AGORA_TEST_AMQP_URL not set: RabbitMQ case skipped");
                        return;
                    }
                    let namespace = format!("agora-test-{}", uuid::Uuid::now_v7().simple());
                    let app = $crate::helpers::spawn_on_rabbitmq(&namespace).await;
                    super::$name(app).await;
                    $crate::helpers::remove_namespace(&namespace).await;
                }
            )*
        }
    };
}

/// Runs a test body once on SQLite and once on PostgreSQL (when configured).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::helpers::postgres_url().is_none() {
                        eprintln!("AGORA_TEST_DATABASE_URL not set: PostgreSQL case skipped");
                        return;
                    }
                    super::$name($crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await).await;
                }
            )*
        }
    };
}
