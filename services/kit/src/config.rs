//! Configuration from the environment, validated before any port is bound.
//!
//! Every variable name is a constant here. Parsing is a pure function of a key/value
//! source, so tests pass a map and never touch the process environment, and every
//! problem is reported at once instead of one per restart.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::net::IpRange;

pub const HTTP_ADDR: &str = "AGORA_HTTP_ADDR";
pub const GRPC_ADDR: &str = "AGORA_GRPC_ADDR";
pub const METRICS_ADDR: &str = "AGORA_METRICS_ADDR";
pub const DATA_DIR: &str = "AGORA_DATA_DIR";
pub const DATABASE_URL: &str = "AGORA_DATABASE_URL";
pub const AMQP_URL: &str = "AGORA_AMQP_URL";
pub const AMQP_NAMESPACE: &str = "AGORA_AMQP_NAMESPACE";
pub const CORS_ORIGINS: &str = "AGORA_CORS_ORIGINS";
pub const AUTH_KEYS_DIR: &str = "AGORA_AUTH_KEYS_DIR";
pub const JWT_ISSUER: &str = "AGORA_JWT_ISSUER";
pub const JWT_AUDIENCE: &str = "AGORA_JWT_AUDIENCE";
pub const ACCESS_TOKEN_TTL: &str = "AGORA_ACCESS_TOKEN_TTL";
pub const REFRESH_TOKEN_TTL: &str = "AGORA_REFRESH_TOKEN_TTL";
pub const SESSION_MAX_LIFETIME: &str = "AGORA_SESSION_MAX_LIFETIME";
pub const LOG_FORMAT: &str = "AGORA_LOG_FORMAT";
pub const ADMIN_EMAIL: &str = "AGORA_ADMIN_EMAIL";
pub const RATE_LIMIT_PER_SECOND: &str = "AGORA_RATE_LIMIT_PER_SECOND";
pub const AUTH_RATE_LIMIT_PER_MINUTE: &str = "AGORA_AUTH_RATE_LIMIT_PER_MINUTE";
pub const BODY_LIMIT_BYTES: &str = "AGORA_BODY_LIMIT_BYTES";
pub const REQUEST_TIMEOUT: &str = "AGORA_REQUEST_TIMEOUT";
pub const PASSWORD_HASH_CONCURRENCY: &str = "AGORA_PASSWORD_HASH_CONCURRENCY";
pub const TRUSTED_PROXIES: &str = "AGORA_TRUSTED_PROXIES";

/// The four services; each owns a database and a gRPC endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    User,
    Auth,
    Post,
    Notification,
}

impl ServiceName {
    pub const ALL: [ServiceName; 4] = [Self::User, Self::Auth, Self::Post, Self::Notification];

    /// Lower-case name: SQLite file stem, PostgreSQL schema suffix, CLI target.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Auth => "auth",
            Self::Post => "post",
            Self::Notification => "notification",
        }
    }

    /// The proto package whose services this target serves.
    pub fn proto_package(self) -> &'static str {
        match self {
            Self::User => "agora.user.v1",
            Self::Auth => "agora.auth.v1",
            Self::Post => "agora.post.v1",
            Self::Notification => "agora.notification.v1",
        }
    }

    fn env_prefix(self) -> &'static str {
        match self {
            Self::User => "AGORA_USER",
            Self::Auth => "AGORA_AUTH",
            Self::Post => "AGORA_POST",
            Self::Notification => "AGORA_NOTIFICATION",
        }
    }

    /// `AGORA_<SERVICE>_DATABASE_URL`: this service's own database.
    pub fn database_url_var(self) -> String {
        format!("{}_DATABASE_URL", self.env_prefix())
    }

    /// `AGORA_<SERVICE>_GRPC_URL`: where other targets reach this service.
    pub fn grpc_url_var(self) -> String {
        format!("{}_GRPC_URL", self.env_prefix())
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that must never reach a log line or a `Debug` dump.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for collectors.
    Json,
}

/// Where a service keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database; each service works in its own schema.
    Postgres(Secret),
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Where every target serves Prometheus `/metrics` (default 127.0.0.1:9464;
    /// `off`: nowhere). Never on the public HTTP port.
    pub metrics_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub databases: HashMap<ServiceName, DatabaseTarget>,
    /// Explicit upstream URLs; a service without one is reached in this process.
    pub grpc_urls: HashMap<ServiceName, String>,
    pub amqp_url: Option<Secret>,
    /// Prefix of the exchange and queue names, so environments can share a broker.
    pub amqp_namespace: String,
    pub cors_origins: Vec<String>,
    pub auth_keys_dir: PathBuf,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    /// Sliding: a session ends this long after its last refresh.
    pub refresh_token_ttl: Duration,
    /// Absolute: a session ends this long after sign-in, however often refreshed.
    pub session_max_lifetime: Duration,
    pub log_format: Option<LogFormat>,
    pub admin_email: Option<String>,
    pub rate_limit_per_second: u32,
    pub auth_rate_limit_per_minute: u32,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// How many password hashes may run at once; each holds ~19 MiB.
    pub password_hash_concurrency: usize,
    /// Peers whose `X-Forwarded-For` the gateway believes (the ingress, load
    /// balancers); empty means every client is its TCP peer.
    pub trusted_proxies: Vec<IpRange>,
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_source(|key| std::env::var(key).ok())
    }

    /// Parses configuration from any key/value source, collecting every problem.
    pub fn from_source(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let get = |key: &str| {
            get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut errors = Vec::new();
        let http_addr = socket_addr(HTTP_ADDR, get(HTTP_ADDR), "127.0.0.1:8080", &mut errors);
        let grpc_addr = socket_addr(GRPC_ADDR, get(GRPC_ADDR), "127.0.0.1:50051", &mut errors);
        // On by default, on an address of its own: the public port never serves them.
        let metrics_addr = match get(METRICS_ADDR).as_deref() {
            Some("off") => None,
            raw => Some(socket_addr(
                METRICS_ADDR,
                raw.map(str::to_owned),
                // Not 9090: Prometheus itself listens there on a developer's machine.
                "127.0.0.1:9464",
                &mut errors,
            )),
        };
        let data_dir = PathBuf::from(get(DATA_DIR).unwrap_or_else(|| "./data".into()));

        // A bad shared URL is one problem, not one per service.
        let shared_db =
            get(DATABASE_URL).map(|url| database_target(DATABASE_URL, &url, &mut errors));
        let mut databases = HashMap::new();
        for service in ServiceName::ALL {
            let var = service.database_url_var();
            let target = match (get(&var), &shared_db) {
                (Some(url), _) => database_target(&var, &url, &mut errors),
                (None, Some(shared)) => shared.clone(),
                (None, None) => Some(DatabaseTarget::Sqlite(
                    data_dir.join(format!("{}.db", service.as_str())),
                )),
            };
            if let Some(target) = target {
                databases.insert(service, target);
            }
        }

        let mut grpc_urls = HashMap::new();
        for service in ServiceName::ALL {
            let var = service.grpc_url_var();
            if let Some(url) = get(&var) {
                if url.starts_with("http://") {
                    grpc_urls.insert(service, url);
                } else if url.starts_with("https://") {
                    // tonic is built without TLS here: an https:// URL would be
                    // dialled in plaintext. Refuse it rather than downgrade silently;
                    // encrypt service traffic with the mesh (mTLS sidecars) instead.
                    errors.push(format!(
                        "{var}: `{url}`: https:// is not supported between services \
                         (agora would connect in plaintext); use http:// inside a mesh \
                         that encrypts pod traffic"
                    ));
                } else {
                    errors.push(format!("{var}: `{url}` is not an http:// URL"));
                }
            }
        }

        let amqp_url = get(AMQP_URL).and_then(|url| {
            if url.starts_with("amqp://") || url.starts_with("amqps://") {
                Some(Secret::new(url))
            } else {
                errors.push(format!("{AMQP_URL}: expected an amqp:// or amqps:// URL"));
                None
            }
        });

        let amqp_namespace = get(AMQP_NAMESPACE).unwrap_or_else(|| "agora".into());
        if !amqp_namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            errors.push(format!(
                "{AMQP_NAMESPACE}: `{amqp_namespace}` may contain only letters, digits, -, _ and ."
            ));
        }

        let cors_origins = get(CORS_ORIGINS)
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();

        let auth_keys_dir = get(AUTH_KEYS_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("keys"));
        let jwt_issuer = get(JWT_ISSUER).unwrap_or_else(|| "agora".into());
        let jwt_audience = get(JWT_AUDIENCE).unwrap_or_else(|| "agora".into());
        let access_token_ttl = duration(&get, ACCESS_TOKEN_TTL, "15m", &mut errors);
        let refresh_token_ttl = duration(&get, REFRESH_TOKEN_TTL, "7d", &mut errors);
        if access_token_ttl >= refresh_token_ttl {
            errors.push(format!(
                "{ACCESS_TOKEN_TTL} must be shorter than {REFRESH_TOKEN_TTL}"
            ));
        }
        let session_max_lifetime = duration(&get, SESSION_MAX_LIFETIME, "30d", &mut errors);
        if session_max_lifetime < refresh_token_ttl {
            errors.push(format!(
                "{SESSION_MAX_LIFETIME} must not be shorter than {REFRESH_TOKEN_TTL}"
            ));
        }

        let log_format = match get(LOG_FORMAT).as_deref() {
            None => None,
            Some("json") => Some(LogFormat::Json),
            Some("pretty") => Some(LogFormat::Pretty),
            Some(other) => {
                errors.push(format!("{LOG_FORMAT}: `{other}` is not json or pretty"));
                None
            }
        };
        let admin_email = get(ADMIN_EMAIL).map(|e| e.to_lowercase());

        let rate_limit_per_second = number(&get, RATE_LIMIT_PER_SECOND, 50, &mut errors);
        let auth_rate_limit_per_minute = number(&get, AUTH_RATE_LIMIT_PER_MINUTE, 30, &mut errors);
        let body_limit_bytes = number(&get, BODY_LIMIT_BYTES, 1 << 20, &mut errors);
        let request_timeout = duration(&get, REQUEST_TIMEOUT, "30s", &mut errors);
        // One hashing worker per core: argon2 is CPU-bound, more workers only add memory.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let password_hash_concurrency = number(&get, PASSWORD_HASH_CONCURRENCY, cores, &mut errors);
        let trusted_proxies = get(TRUSTED_PROXIES)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .filter_map(|r| {
                        r.parse::<IpRange>()
                            .map_err(|e| errors.push(format!("{TRUSTED_PROXIES}: {e}")))
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default();

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Self {
            http_addr,
            grpc_addr,
            metrics_addr,
            data_dir,
            databases,
            grpc_urls,
            amqp_url,
            amqp_namespace,
            cors_origins,
            auth_keys_dir,
            jwt_issuer,
            jwt_audience,
            access_token_ttl,
            refresh_token_ttl,
            session_max_lifetime,
            log_format,
            admin_email,
            rate_limit_per_second,
            auth_rate_limit_per_minute,
            body_limit_bytes,
            request_timeout,
            password_hash_concurrency,
            trusted_proxies,
        })
    }

    /// The database of one service.
    pub fn database(&self, service: ServiceName) -> &DatabaseTarget {
        &self.databases[&service]
    }
}

fn socket_addr(
    key: &str,
    raw: Option<String>,
    default: &str,
    errors: &mut Vec<String>,
) -> SocketAddr {
    let raw = raw.unwrap_or_else(|| default.to_owned());
    raw.parse().unwrap_or_else(|_| {
        errors.push(format!(
            "{key}: `{raw}` is not an address like 127.0.0.1:8080"
        ));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn database_target(key: &str, url: &str, errors: &mut Vec<String>) -> Option<DatabaseTarget> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(DatabaseTarget::Postgres(Secret::new(url)))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Some(DatabaseTarget::Sqlite(PathBuf::from(path)))
    } else {
        errors.push(format!(
            "{key}: expected a postgres:// or sqlite:// URL (the value is not shown)"
        ));
        None
    }
}

fn number<T: std::str::FromStr + Copy + PartialOrd + Default>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: T,
    errors: &mut Vec<String>,
) -> T {
    match get(key) {
        None => default,
        Some(raw) => match raw.parse::<T>() {
            Ok(v) if v > T::default() => v,
            _ => {
                errors.push(format!("{key}: `{raw}` is not a positive whole number"));
                default
            }
        },
    }
}

fn duration(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    default: &str,
    errors: &mut Vec<String>,
) -> Duration {
    let raw = get(key).unwrap_or_else(|| default.to_owned());
    parse_duration(&raw).unwrap_or_else(|| {
        errors.push(format!(
            "{key}: `{raw}` is not a duration like 30s, 15m, 12h or 7d"
        ));
        parse_duration(default).unwrap_or_default()
    })
}

/// Parses `90`, `90s`, `15m`, `12h`, `7d` (a whole number and one unit).
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_source(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_give_the_embedded_setup() {
        let config = from(&[]).unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(
            config.database(ServiceName::Post),
            &DatabaseTarget::Sqlite(PathBuf::from("./data/post.db"))
        );
        assert!(config.amqp_url.is_none());
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert_eq!(config.refresh_token_ttl, Duration::from_secs(7 * 86_400));
        assert!(config.trusted_proxies.is_empty());
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidr_ranges() {
        let config = from(&[(TRUSTED_PROXIES, "10.0.0.0/8, 192.0.2.7 ,,fd00::/8")]).unwrap();
        let listed: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(listed, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
    }

    #[test]
    fn a_service_database_url_overrides_the_shared_one() {
        let config = from(&[
            (DATABASE_URL, "postgres://db/agora"),
            ("AGORA_AUTH_DATABASE_URL", "postgres://auth-db/agora"),
        ])
        .unwrap();
        assert_eq!(
            config.database(ServiceName::Auth),
            &DatabaseTarget::Postgres(Secret::new("postgres://auth-db/agora"))
        );
        assert_eq!(
            config.database(ServiceName::User),
            &DatabaseTarget::Postgres(Secret::new("postgres://db/agora"))
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = from(&[
            (HTTP_ADDR, "not-an-address"),
            (DATABASE_URL, "mysql://secret@db"),
            (AMQP_URL, "http://broker"),
            (ACCESS_TOKEN_TTL, "soon"),
            (LOG_FORMAT, "xml"),
            ("AGORA_USER_GRPC_URL", "agora-user:50051"),
            (TRUSTED_PROXIES, "10.0.0.0/8, ingress.local, 10.0.0.0/40"),
        ])
        .unwrap_err();
        assert_eq!(errors.0.len(), 8, "{errors}");
        assert!(errors.to_string().contains("`ingress.local`"), "{errors}");
        assert!(!errors.to_string().contains("secret"), "{errors}");
    }

    #[test]
    fn https_service_urls_are_refused_rather_than_dialled_in_plaintext() {
        let errors = from(&[("AGORA_AUTH_GRPC_URL", "https://agora-auth:50051")]).unwrap_err();
        assert!(errors.to_string().contains("plaintext"), "{errors}");
        let config = from(&[("AGORA_AUTH_GRPC_URL", "http://agora-auth:50051")]).unwrap();
        assert_eq!(
            config.grpc_urls[&ServiceName::Auth],
            "http://agora-auth:50051"
        );
    }

    #[test]
    fn durations_take_one_unit() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }
}
