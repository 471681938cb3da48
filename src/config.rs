//! Typed settings, read from `KEYGATE_*` environment variables (see
//! `.env.example`). Tests build a [`Config`] from a map instead of mutating
//! the process environment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::db::DatabaseUrl;

#[derive(Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub superuser: String,
    /// Only used to create the first superuser; never logged.
    pub superuser_password: Option<String>,
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
    pub max_body_bytes: usize,
    pub workers: Option<usize>,
    /// How long a flow run waits for the upstream's response headers
    /// before answering 504.
    pub upstream_timeout: Duration,
    /// `KEYGATE_SECRET_KEY`: the operator secret the encryption key is
    /// derived from. `None`: `{data_dir}/secret.key` (see `crypto`). Never
    /// logged, never in `Debug`.
    pub secret_key: Option<String>,
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
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url)
            .field("superuser", &self.superuser)
            .field("new_user_is_active", &self.new_user_is_active)
            .field("enable_signup", &self.enable_signup)
            .field("cookie_secure", &self.cookie_secure)
            .field("auto_login", &self.auto_login)
            .field("allow_private_upstreams", &self.allow_private_upstreams)
            .field("provider_timeout", &self.provider_timeout)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings from a map of `KEYGATE_*` names (used by tests).
    pub fn from_map(values: &HashMap<String, String>) -> Result<Self, String> {
        Self::from_lookup(|name| values.get(name).cloned())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let data_dir = PathBuf::from(get("KEYGATE_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let database_url = match get("KEYGATE_DATABASE_URL") {
            Some(url) => {
                DatabaseUrl::parse(&url).map_err(|e| format!("KEYGATE_DATABASE_URL: {e}"))?
            }
            None => DatabaseUrl::Sqlite(data_dir.join("keygate.db")),
        };
        let workers = match get("KEYGATE_WORKERS") {
            Some(v) => match parse_number::<usize>("KEYGATE_WORKERS", &v)? {
                0 => None,
                w if w > 256 => return Err("KEYGATE_WORKERS: at most 256".into()),
                w => Some(w),
            },
            None => None,
        };
        Ok(Config {
            host: get("KEYGATE_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            port: parse_or("KEYGATE_PORT", get("KEYGATE_PORT"), 7860)?,
            data_dir,
            database_url,
            superuser: get("KEYGATE_SUPERUSER").unwrap_or_else(|| "admin".into()),
            superuser_password: get("KEYGATE_SUPERUSER_PASSWORD"),
            new_user_is_active: parse_bool(
                "KEYGATE_NEW_USER_IS_ACTIVE",
                get("KEYGATE_NEW_USER_IS_ACTIVE"),
            )?,
            enable_signup: parse_bool("KEYGATE_ENABLE_SIGNUP", get("KEYGATE_ENABLE_SIGNUP"))?,
            enable_superuser_cli: parse_bool(
                "KEYGATE_ENABLE_SUPERUSER_CLI",
                get("KEYGATE_ENABLE_SUPERUSER_CLI"),
            )?,
            cookie_secure: parse_bool("KEYGATE_COOKIE_SECURE", get("KEYGATE_COOKIE_SECURE"))?,
            auto_login: parse_bool("KEYGATE_AUTO_LOGIN", get("KEYGATE_AUTO_LOGIN"))?,
            session_ttl: Duration::from_secs(
                60 * parse_or::<u64>(
                    "KEYGATE_SESSION_TTL_MINUTES",
                    get("KEYGATE_SESSION_TTL_MINUTES"),
                    720,
                )?,
            ),
            pool_size: parse_or("KEYGATE_DB_POOL_SIZE", get("KEYGATE_DB_POOL_SIZE"), 10)?.max(1),
            db_timeout: Duration::from_millis(
                parse_or::<u64>("KEYGATE_DB_TIMEOUT_MS", get("KEYGATE_DB_TIMEOUT_MS"), 5000)?
                    .max(100),
            ),
            usage_flush_interval: Duration::from_millis(
                parse_or::<u64>(
                    "KEYGATE_USAGE_FLUSH_MS",
                    get("KEYGATE_USAGE_FLUSH_MS"),
                    5000,
                )?
                .max(10),
            ),
            max_body_bytes: parse_or(
                "KEYGATE_MAX_BODY_BYTES",
                get("KEYGATE_MAX_BODY_BYTES"),
                1024 * 1024,
            )?,
            workers,
            upstream_timeout: Duration::from_millis(
                parse_or::<u64>(
                    "KEYGATE_UPSTREAM_TIMEOUT_MS",
                    get("KEYGATE_UPSTREAM_TIMEOUT_MS"),
                    60_000,
                )?
                .max(1),
            ),
            secret_key: get("KEYGATE_SECRET_KEY"),
            allow_private_upstreams: parse_bool(
                "KEYGATE_ALLOW_PRIVATE_UPSTREAMS",
                get("KEYGATE_ALLOW_PRIVATE_UPSTREAMS"),
            )?,
            provider_timeout: Duration::from_millis(
                parse_or::<u64>(
                    "KEYGATE_PROVIDER_TIMEOUT_MS",
                    get("KEYGATE_PROVIDER_TIMEOUT_MS"),
                    5000,
                )?
                .clamp(50, 600_000),
            ),
            key_cache_size: parse_or(
                "KEYGATE_KEY_CACHE_SIZE",
                get("KEYGATE_KEY_CACHE_SIZE"),
                100_000,
            )?
            .max(1),
            key_cache_ttl: Duration::from_secs(parse_or(
                "KEYGATE_KEY_CACHE_TTL_SECS",
                get("KEYGATE_KEY_CACHE_TTL_SECS"),
                30,
            )?),
            negative_cache_ttl: Duration::from_secs(parse_or(
                "KEYGATE_NEGATIVE_CACHE_TTL_SECS",
                get("KEYGATE_NEGATIVE_CACHE_TTL_SECS"),
                5,
            )?),
            notify_poll: Duration::from_millis(
                parse_or::<u64>("KEYGATE_NOTIFY_POLL_MS", get("KEYGATE_NOTIFY_POLL_MS"), 25)?
                    .clamp(1, 1000),
            ),
        })
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name}: expected a number, got {value:?}"))
}

fn parse_or<T: std::str::FromStr>(
    name: &str,
    value: Option<String>,
    default: T,
) -> Result<T, String> {
    match value {
        Some(v) => parse_number(name, &v),
        None => Ok(default),
    }
}

fn parse_bool(name: &str, value: Option<String>) -> Result<bool, String> {
    match value.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(v) => Err(format!("{name}: expected true or false, got {v:?}")),
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
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let mut map = HashMap::new();
        map.insert(
            "KEYGATE_SECRET_KEY".to_string(),
            "very-secret-value-123".to_string(),
        );
        let config = Config::from_map(&map).unwrap();
        assert_eq!(config.secret_key.as_deref(), Some("very-secret-value-123"));
        assert!(!format!("{config:?}").contains("very-secret"));
    }

    #[test]
    fn rejects_bad_values() {
        let mut map = HashMap::new();
        map.insert("KEYGATE_PORT".to_string(), "http".to_string());
        assert!(Config::from_map(&map).is_err());
        map.clear();
        map.insert("KEYGATE_COOKIE_SECURE".to_string(), "maybe".to_string());
        assert!(Config::from_map(&map).is_err());
    }
}
