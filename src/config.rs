//! Typed settings from `KEYGATE_*` environment variables (see
//! `.env.example` and the operator guide).
//!
//! [`Settings`] declares every variable once: its name is the field's
//! (upper-cased, after `KEYGATE_`), with its default and its doc beside it;
//! envy reads them. [`Config`] is what the rest of keygate uses: the same
//! values checked and turned into durations, paths and the database URL.
//! Tests build a [`Config`] from a map instead of mutating the process
//! environment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::client_ip::Cidr;
use crate::db::DatabaseUrl;
use crate::hosts::AllowedHosts;

/// Every `KEYGATE_*` variable, as given. An empty value counts as unset.
#[derive(Deserialize)]
struct Settings {
    /// Address to listen on (`serve --host` overrides it).
    #[serde(default = "default_host")]
    host: String,
    /// Port to listen on (`serve --port` overrides it); 0 picks a free one.
    #[serde(default = "default_port")]
    port: u16,
    /// Directory of the default SQLite database and the generated secret.
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    /// `postgres://…` selects PostgreSQL; unset: SQLite in `data_dir`.
    #[serde(default)]
    database_url: Option<String>,
    /// Username of the superuser created when the database has none.
    #[serde(default = "default_superuser")]
    superuser: String,
    /// Password of that first superuser; unset: generated and printed once.
    #[serde(default)]
    superuser_password: Option<SecretString>,
    /// Whether signed-up users (and users created without saying) are active.
    #[serde(default, deserialize_with = "flag")]
    new_user_is_active: bool,
    /// Public sign-up: anyone may `POST /api/v1/users/`.
    #[serde(default, deserialize_with = "flag")]
    enable_signup: bool,
    /// Allow `keygate superuser` to create superusers.
    #[serde(default, deserialize_with = "flag")]
    enable_superuser_cli: bool,
    /// The `Secure` attribute on the session cookie (behind HTTPS).
    #[serde(default, deserialize_with = "flag")]
    cookie_secure: bool,
    /// `GET /api/v1/auto_login` hands out superuser sessions without a
    /// password (Langflow's AUTO_LOGIN).
    #[serde(default, deserialize_with = "flag")]
    auto_login: bool,
    /// Lifetime of a sign-in session, in minutes.
    #[serde(default = "default_session_ttl_minutes")]
    session_ttl_minutes: u64,
    /// Database connections per process (at least 1).
    #[serde(default = "default_db_pool_size")]
    db_pool_size: u32,
    /// How long a request waits for a connection before a 503 (ms, at least 100).
    #[serde(default = "default_db_timeout_ms")]
    db_timeout_ms: u64,
    /// How often usage counters are written (ms, at least 10).
    #[serde(default = "default_usage_flush_ms")]
    usage_flush_ms: u64,
    /// How often each instance adds its rate-limited keys' requests to the
    /// shared per-window counts and reads the others' back (ms, 10 to 60000).
    #[serde(default = "default_rate_limit_sync_ms")]
    rate_limit_sync_ms: u64,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    /// Largest file accepted by `POST /api/v1/files/upload/{flow}`, in bytes.
    #[serde(default = "default_max_upload_bytes")]
    max_upload_bytes: usize,
    /// HTTP worker threads; unset or 0: one per CPU (at most 256).
    #[serde(default)]
    workers: usize,
    /// How long a run waits for the upstream's response headers (ms, at least 1).
    #[serde(default = "default_upstream_timeout_ms")]
    upstream_timeout_ms: u64,
    /// The operator secret stored secrets are encrypted under; unset:
    /// `{data_dir}/secret.key`, generated on first start.
    #[serde(default)]
    secret_key: Option<SecretString>,
    /// Let outbound calls reach loopback, private and link-local addresses.
    #[serde(default, deserialize_with = "flag")]
    allow_private_upstreams: bool,
    /// Connect and total time-out of provider checks (ms, 50 to 600000).
    #[serde(default = "default_provider_timeout_ms")]
    provider_timeout_ms: u64,
    /// Verified keys (and runnable flows) kept in memory per process.
    #[serde(default = "default_key_cache_size")]
    key_cache_size: usize,
    /// Seconds after which a cached entry is read again (safety net).
    #[serde(default = "default_key_cache_ttl_secs")]
    key_cache_ttl_secs: u64,
    /// Seconds an unknown key is remembered as unknown.
    #[serde(default = "default_negative_cache_ttl_secs")]
    negative_cache_ttl_secs: u64,
    /// PostgreSQL: how often the invalidation listener polls (ms, 1 to 1000).
    #[serde(default = "default_notify_poll_ms")]
    notify_poll_ms: u64,
    /// Failed sign-ins per username before back-off (at least 1).
    #[serde(default = "default_login_max_failures")]
    login_max_failures: u32,
    /// Failed sign-ins per client address before back-off (at least 1).
    #[serde(default = "default_login_max_address_failures")]
    login_max_address_failures: u32,
    /// Seconds failures are remembered after the last one (at least 1).
    #[serde(default = "default_login_window_secs")]
    login_window_secs: u64,
    /// First back-off once the limit is reached, doubled per further
    /// failure up to the window (seconds, at least 1).
    #[serde(default = "default_login_backoff_secs")]
    login_backoff_secs: u64,
    /// Password checks that may wait for the hashing thread; past it, 503.
    #[serde(default = "default_password_queue")]
    password_queue: usize,
    /// `Host` names and addresses keygate answers to, comma-separated (ports
    /// ignored, any case); `*`: every host. Unset: loopback names and
    /// addresses only when bound to loopback, every host (with a warning, and
    /// no auto-login) otherwise.
    #[serde(default)]
    allowed_hosts: Option<String>,
    /// Reverse proxies (comma-separated CIDR blocks or addresses) whose
    /// `X-Forwarded-For` / `Forwarded` headers name the client. Empty: the
    /// TCP peer is the client.
    #[serde(default)]
    trusted_proxies: Option<String>,
    /// Invalid API keys one client address may send per minute before its
    /// further invalid keys get 429; 0 turns the limit off.
    #[serde(default = "default_key_failures_per_minute")]
    key_failures_per_minute: u32,
    /// How long a request body may take to arrive (ms, at least 1); past it, 408.
    #[serde(default = "default_body_timeout_ms")]
    body_timeout_ms: u64,
    /// Log lines as `text` (for people) or `json` (one object per line).
    #[serde(default)]
    log_format: Option<String>,
    /// Serve Prometheus metrics at `/metrics`.
    #[serde(default, deserialize_with = "flag")]
    metrics: bool,
    /// `host:port` of a listener of its own for `/metrics` (with
    /// `KEYGATE_METRICS=true`); unset: `/metrics` on the main listener.
    #[serde(default)]
    metrics_addr: Option<String>,
    /// After SIGTERM/SIGINT, how long `/ready` answers 503 while requests
    /// are still served, before the server stops accepting (seconds).
    #[serde(default = "default_shutdown_drain_seconds")]
    shutdown_drain_seconds: u64,
    /// Then, how long requests in flight may take to finish (seconds).
    #[serde(default = "default_shutdown_timeout_seconds")]
    shutdown_timeout_seconds: u64,
    /// Days audit events are kept (1 to 36500); older ones are pruned.
    #[serde(default = "default_audit_retention_days")]
    audit_retention_days: u32,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    7860
}
fn default_data_dir() -> PathBuf {
    "./data".into()
}
fn default_superuser() -> String {
    "admin".into()
}
fn default_session_ttl_minutes() -> u64 {
    720
}
fn default_db_pool_size() -> u32 {
    10
}
fn default_db_timeout_ms() -> u64 {
    5000
}
fn default_usage_flush_ms() -> u64 {
    5000
}
fn default_rate_limit_sync_ms() -> u64 {
    100
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_upload_bytes() -> usize {
    100 * 1024 * 1024
}
fn default_upstream_timeout_ms() -> u64 {
    60_000
}
fn default_provider_timeout_ms() -> u64 {
    5000
}
fn default_key_cache_size() -> usize {
    100_000
}
fn default_key_cache_ttl_secs() -> u64 {
    30
}
fn default_negative_cache_ttl_secs() -> u64 {
    5
}
fn default_notify_poll_ms() -> u64 {
    25
}
fn default_login_max_failures() -> u32 {
    5
}
fn default_login_max_address_failures() -> u32 {
    20
}
fn default_login_window_secs() -> u64 {
    15 * 60
}
fn default_login_backoff_secs() -> u64 {
    30
}
fn default_password_queue() -> usize {
    32
}
fn default_key_failures_per_minute() -> u32 {
    120
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_shutdown_drain_seconds() -> u64 {
    5
}
fn default_shutdown_timeout_seconds() -> u64 {
    30
}
fn default_audit_retention_days() -> u32 {
    90
}

/// The longest audit retention accepted, in days (about a hundred years).
pub const MAX_AUDIT_RETENTION_DAYS: u32 = 36_500;

/// Booleans as operators write them: true/false, 1/0, yes/no, on/off.
fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(serde::de::Error::custom(format!(
            "expected true or false, got {:?}",
            text.trim()
        ))),
    }
}

const PREFIX: &str = "KEYGATE_";

#[derive(Clone, Debug)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub superuser: String,
    /// Only used to create the first superuser; never logged.
    pub superuser_password: Option<SecretString>,
    pub new_user_is_active: bool,
    pub enable_signup: bool,
    pub enable_superuser_cli: bool,
    pub cookie_secure: bool,
    /// `KEYGATE_AUTO_LOGIN`: `GET /api/v1/auto_login` hands out superuser
    /// sessions without a password (Langflow's AUTO_LOGIN).
    pub auto_login: bool,
    pub session_ttl: Duration,
    pub pool_size: u32,
    /// How long a request waits for a database connection before a 503.
    pub db_timeout: Duration,
    pub usage_flush_interval: Duration,
    /// `KEYGATE_RATE_LIMIT_SYNC_MS`: how often rate-limit counts are shared
    /// between instances (see `keys::limits`).
    pub rate_limit_sync_interval: Duration,
    pub max_body_bytes: usize,
    /// `KEYGATE_MAX_UPLOAD_BYTES`: the largest multipart body a file upload
    /// streams to a Langflow upstream.
    pub max_upload_bytes: usize,
    pub workers: Option<usize>,
    /// How long a flow run waits for the upstream's response headers
    /// before answering 504.
    pub upstream_timeout: Duration,
    /// `KEYGATE_SECRET_KEY`: the operator secret the encryption key is
    /// derived from. `None`: `{data_dir}/secret.key` (see `crypto`).
    pub secret_key: Option<SecretString>,
    /// `KEYGATE_ALLOW_PRIVATE_UPSTREAMS`: let outbound calls reach loopback,
    /// private and link-local addresses (see `outbound`).
    pub allow_private_upstreams: bool,
    /// `KEYGATE_PROVIDER_TIMEOUT_MS`: connect and total time-out of provider
    /// calls.
    pub provider_timeout: Duration,
    /// Verified keys kept in memory (each entry is a few hundred bytes).
    pub key_cache_size: usize,
    /// Age after which a cached key is looked up again (safety net).
    pub key_cache_ttl: Duration,
    /// How long an unknown key hash is remembered as unknown.
    pub negative_cache_ttl: Duration,
    /// How often the PostgreSQL invalidation listener polls.
    pub notify_poll: Duration,
    /// `KEYGATE_ALLOWED_HOSTS` as given (already checked); read it through
    /// [`Config::allowed_hosts`], which also depends on `host`.
    allowed_hosts: Option<String>,
    /// `KEYGATE_TRUSTED_PROXIES`: peers whose forwarding headers name the
    /// client (see `client_ip`).
    pub trusted_proxies: Vec<Cidr>,
    /// `KEYGATE_KEY_FAILURES_PER_MINUTE`; 0: no limit.
    pub key_failures_per_minute: u32,
    /// `KEYGATE_BODY_TIMEOUT_MS`: the longest a request body may take.
    pub body_timeout: Duration,
    /// How sign-in failures are throttled (see `users::throttle`).
    pub login_limits: LoginLimits,
    /// `KEYGATE_PASSWORD_QUEUE`: password checks and hashes that may wait
    /// for the hashing thread before new ones are refused with 503.
    pub password_queue: usize,
    /// `KEYGATE_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: MetricsEndpoint,
    /// `KEYGATE_SHUTDOWN_DRAIN_SECONDS`: how long a stopping server keeps
    /// serving with `/ready` at 503, so load balancers take it out first.
    pub shutdown_drain: Duration,
    /// `KEYGATE_SHUTDOWN_TIMEOUT_SECONDS`: how long requests in flight may
    /// take once the server stops accepting.
    pub shutdown_timeout: Duration,
    /// `KEYGATE_AUDIT_RETENTION_DAYS`: audit events older than this many
    /// days are pruned (see `audit::retention`).
    pub audit_retention_days: u32,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

/// `KEYGATE_METRICS` and `KEYGATE_METRICS_ADDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsEndpoint {
    Off,
    /// `/metrics` on the main listener.
    Main,
    /// `/metrics` only on a listener of its own at this `host:port`.
    Separate(String),
}

/// `KEYGATE_LOGIN_*`: how many failed sign-ins a username or a client
/// address may have before each further attempt must wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    pub max_failures: u32,
    pub max_address_failures: u32,
    /// Failures are forgotten once this long has passed since the last
    /// one (or since the end of its back-off).
    pub window: Duration,
    /// The first wait after the limit; doubled per further failure, at
    /// most `window`.
    pub backoff: Duration,
}

impl Config {
    /// Reads the process environment. Variables that are not valid
    /// Unicode are not ours to read (and must not panic the start-up).
    pub fn from_env() -> Result<Self, String> {
        Self::from_pairs(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// Reads settings from a map of `KEYGATE_*` names (used by tests).
    pub fn from_map(values: &HashMap<String, String>) -> Result<Self, String> {
        Self::from_pairs(values.iter().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn from_pairs(pairs: impl Iterator<Item = (String, String)>) -> Result<Self, String> {
        let pairs: Vec<(String, String)> = pairs
            .filter(|(name, value)| name.starts_with(PREFIX) && !value.trim().is_empty())
            .map(|(name, value)| (name, value.trim().to_string()))
            .collect();
        let settings: Settings = envy::prefixed(PREFIX)
            .from_iter(pairs.iter().cloned())
            .map_err(|e| explain(&e.to_string(), &pairs))?;
        Self::from_settings(settings)
    }

    fn from_settings(s: Settings) -> Result<Self, String> {
        let database_url = match &s.database_url {
            Some(url) => {
                DatabaseUrl::parse(url).map_err(|e| format!("KEYGATE_DATABASE_URL: {e}"))?
            }
            None => DatabaseUrl::Sqlite(s.data_dir.join("keygate.db")),
        };
        let workers = match s.workers {
            0 => None,
            w if w > 256 => return Err("KEYGATE_WORKERS: at most 256".into()),
            w => Some(w),
        };
        // Checked now so a bad value stops the start with its name; the
        // default depends on the listening address, which `serve --host`
        // may still change.
        AllowedHosts::from_setting(s.allowed_hosts.as_deref(), &s.host)
            .map_err(|e| format!("KEYGATE_ALLOWED_HOSTS: {e}"))?;
        let trusted_proxies = Cidr::parse_list(s.trusted_proxies.as_deref().unwrap_or_default())
            .map_err(|e| format!("KEYGATE_TRUSTED_PROXIES: {e}"))?;
        let log_format = match s
            .log_format
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(format!(
                    "KEYGATE_LOG_FORMAT: expected text or json, got {other:?}"
                ))
            }
        };
        let metrics = match (s.metrics, s.metrics_addr) {
            (true, Some(addr)) => {
                check_listen_addr(&addr).map_err(|e| format!("KEYGATE_METRICS_ADDR: {e}"))?;
                MetricsEndpoint::Separate(addr)
            }
            (false, Some(_)) => {
                return Err(
                    "KEYGATE_METRICS_ADDR is set but KEYGATE_METRICS is not true; set both to serve metrics"
                        .into(),
                )
            }
            (true, None) => MetricsEndpoint::Main,
            (false, None) => MetricsEndpoint::Off,
        };
        if !(1..=MAX_AUDIT_RETENTION_DAYS).contains(&s.audit_retention_days) {
            return Err(format!(
                "KEYGATE_AUDIT_RETENTION_DAYS: expected 1 to {MAX_AUDIT_RETENTION_DAYS} days, got {}",
                s.audit_retention_days
            ));
        }
        Ok(Config {
            audit_retention_days: s.audit_retention_days,
            allowed_hosts: s.allowed_hosts,
            trusted_proxies,
            key_failures_per_minute: s.key_failures_per_minute,
            body_timeout: Duration::from_millis(s.body_timeout_ms.max(1)),
            host: s.host,
            port: s.port,
            data_dir: s.data_dir,
            database_url,
            superuser: s.superuser,
            superuser_password: s.superuser_password,
            new_user_is_active: s.new_user_is_active,
            enable_signup: s.enable_signup,
            enable_superuser_cli: s.enable_superuser_cli,
            cookie_secure: s.cookie_secure,
            auto_login: s.auto_login,
            session_ttl: Duration::from_secs(60 * s.session_ttl_minutes),
            pool_size: s.db_pool_size.max(1),
            db_timeout: Duration::from_millis(s.db_timeout_ms.max(100)),
            usage_flush_interval: Duration::from_millis(s.usage_flush_ms.max(10)),
            rate_limit_sync_interval: Duration::from_millis(s.rate_limit_sync_ms.clamp(10, 60_000)),
            max_body_bytes: s.max_body_bytes,
            max_upload_bytes: s.max_upload_bytes,
            workers,
            upstream_timeout: Duration::from_millis(s.upstream_timeout_ms.max(1)),
            secret_key: s.secret_key,
            allow_private_upstreams: s.allow_private_upstreams,
            provider_timeout: Duration::from_millis(s.provider_timeout_ms.clamp(50, 600_000)),
            key_cache_size: s.key_cache_size.max(1),
            key_cache_ttl: Duration::from_secs(s.key_cache_ttl_secs),
            negative_cache_ttl: Duration::from_secs(s.negative_cache_ttl_secs),
            notify_poll: Duration::from_millis(s.notify_poll_ms.clamp(1, 1000)),
            login_limits: LoginLimits {
                max_failures: s.login_max_failures.max(1),
                max_address_failures: s.login_max_address_failures.max(1),
                window: Duration::from_secs(s.login_window_secs.max(1)),
                backoff: Duration::from_secs(s.login_backoff_secs.max(1)),
            },
            password_queue: s.password_queue,
            log_format,
            metrics,
            shutdown_drain: Duration::from_secs(s.shutdown_drain_seconds),
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_seconds),
        })
    }
}

impl Config {
    /// The `Host` names requests may carry (`KEYGATE_ALLOWED_HOSTS`, or the
    /// default for the address keygate listens on).
    pub fn allowed_hosts(&self) -> AllowedHosts {
        // Checked in `from_settings`; the listening address never makes a
        // valid setting invalid.
        AllowedHosts::from_setting(self.allowed_hosts.as_deref(), &self.host)
            .unwrap_or(AllowedHosts::Loopback)
    }
}

/// `host:port` (a name or an address; `[::1]:9100` for IPv6).
fn check_listen_addr(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("expected host:port, got {addr:?}")),
    }
}

/// Names the variable in an error: envy names it for numbers ("… provided
/// by KEYGATE_PORT"); for a flag the message carries the value, so the
/// variable holding it is named here.
fn explain(message: &str, pairs: &[(String, String)]) -> String {
    if let Some(name) = pairs
        .iter()
        .map(|(name, _)| name)
        .find(|name| message.ends_with(&format!("provided by {}", &name[PREFIX.len()..])))
    {
        let reason = message.split(" while parsing").next().unwrap_or(message);
        let value = pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        return format!("{name}: expected a number, got {value:?} ({reason})");
    }
    match pairs
        .iter()
        .find(|(_, value)| message.ends_with(&format!("got {value:?}")))
    {
        Some((name, _)) => format!("{name}: {message}"),
        None => format!("settings: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_sqlite_in_data_dir() {
        let config = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(config.port, 7860);
        assert_eq!(config.host, "127.0.0.1");
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite("./data/keygate.db".into())
        );
        assert!(!config.new_user_is_active && !config.enable_signup && !config.cookie_secure);
        assert!(!config.auto_login);
        assert!(config.secret_key.is_none() && !config.allow_private_upstreams);
        assert_eq!(config.provider_timeout, Duration::from_millis(5000));
        assert_eq!(config.allowed_hosts(), AllowedHosts::Loopback);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.key_failures_per_minute, 120);
        assert_eq!(config.body_timeout, Duration::from_millis(10_000));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.metrics, MetricsEndpoint::Off);
        assert_eq!(config.shutdown_drain, Duration::from_secs(5));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn operations_settings() {
        let config = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::from_map(&map)
        };
        let json = config(&[("KEYGATE_LOG_FORMAT", "JSON")]).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let error = config(&[("KEYGATE_LOG_FORMAT", "xml")]).unwrap_err();
        assert!(error.starts_with("KEYGATE_LOG_FORMAT: "), "{error}");
        let main = config(&[("KEYGATE_METRICS", "true")]).unwrap();
        assert_eq!(main.metrics, MetricsEndpoint::Main);
        let separate = config(&[
            ("KEYGATE_METRICS", "true"),
            ("KEYGATE_METRICS_ADDR", "127.0.0.1:9100"),
        ])
        .unwrap();
        assert_eq!(
            separate.metrics,
            MetricsEndpoint::Separate("127.0.0.1:9100".into())
        );
        let error = config(&[("KEYGATE_METRICS_ADDR", "127.0.0.1:9100")]).unwrap_err();
        assert!(error.contains("KEYGATE_METRICS is not true"), "{error}");
        let error =
            config(&[("KEYGATE_METRICS", "1"), ("KEYGATE_METRICS_ADDR", "9100")]).unwrap_err();
        assert!(error.starts_with("KEYGATE_METRICS_ADDR: "), "{error}");
    }

    #[test]
    fn abuse_settings() {
        let mut map = HashMap::new();
        map.insert("KEYGATE_HOST".to_string(), "0.0.0.0".to_string());
        let mut config = Config::from_map(&map).unwrap();
        assert_eq!(config.allowed_hosts(), AllowedHosts::Unset);
        config.host = "::1".into();
        assert_eq!(config.allowed_hosts(), AllowedHosts::Loopback);
        map.insert("KEYGATE_ALLOWED_HOSTS".to_string(), "*,x".to_string());
        let error = Config::from_map(&map).unwrap_err();
        assert!(error.starts_with("KEYGATE_ALLOWED_HOSTS: "), "{error}");
        map.clear();
        map.insert(
            "KEYGATE_TRUSTED_PROXIES".to_string(),
            "10.0.0.0/8,::1".to_string(),
        );
        assert_eq!(Config::from_map(&map).unwrap().trusted_proxies.len(), 2);
        map.insert(
            "KEYGATE_TRUSTED_PROXIES".to_string(),
            "10.0.0.0/40".to_string(),
        );
        let error = Config::from_map(&map).unwrap_err();
        assert!(error.starts_with("KEYGATE_TRUSTED_PROXIES: "), "{error}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let mut map = HashMap::new();
        map.insert(
            "KEYGATE_SECRET_KEY".to_string(),
            "very-secret-value-123".to_string(),
        );
        let config = Config::from_map(&map).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(
            config.secret_key.as_ref().map(|s| s.expose_secret()),
            Some("very-secret-value-123")
        );
        assert!(!format!("{config:?}").contains("very-secret"));
    }

    #[test]
    fn rejects_bad_values() {
        let mut map = HashMap::new();
        map.insert("KEYGATE_PORT".to_string(), "http".to_string());
        let error = Config::from_map(&map).unwrap_err();
        assert!(
            error.starts_with("KEYGATE_PORT: expected a number, got \"http\""),
            "{error}"
        );
        map.clear();
        map.insert("KEYGATE_COOKIE_SECURE".to_string(), "maybe".to_string());
        let error = Config::from_map(&map).unwrap_err();
        assert_eq!(
            error,
            "KEYGATE_COOKIE_SECURE: expected true or false, got \"maybe\""
        );
        map.clear();
        map.insert("KEYGATE_AUTO_LOGIN".to_string(), " yes ".to_string());
        map.insert("KEYGATE_PORT".to_string(), "".to_string());
        let config = Config::from_map(&map).unwrap();
        assert!(config.auto_login);
        assert_eq!(config.port, 7860, "an empty value counts as unset");
    }

    #[test]
    fn audit_retention_is_checked() {
        assert_eq!(
            Config::from_map(&HashMap::new())
                .unwrap()
                .audit_retention_days,
            90
        );
        let mut map = HashMap::new();
        map.insert("KEYGATE_AUDIT_RETENTION_DAYS".to_string(), "7".to_string());
        assert_eq!(Config::from_map(&map).unwrap().audit_retention_days, 7);
        for bad in ["0", "36501", "-1", "ninety", "1.5"] {
            map.insert("KEYGATE_AUDIT_RETENTION_DAYS".to_string(), bad.to_string());
            let error = Config::from_map(&map).unwrap_err();
            assert!(
                error.starts_with("KEYGATE_AUDIT_RETENTION_DAYS: "),
                "{bad}: {error}"
            );
        }
    }
}
