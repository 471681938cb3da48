//! Test harness: a real keygate server on a loopback port over a fresh
//! database (an SQLite file in a temporary directory, or a new database on
//! the real PostgreSQL server), driven over HTTP with reqwest.

#![allow(dead_code)]

pub mod fake_provider;
pub mod upstream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use diesel::prelude::*;
use diesel::{Connection, PgConnection, RunQueryDsl};
use keygate::config::Config;
use keygate::db::{ConnectionManager, DatabaseUrl, DbConnection};
use keygate::server::{self, RunningServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named scenario `async fn name(backend: Backend)` once per
/// backend, as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of one test's own, dropped with it.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub dir: PathBuf,
    pg_name: Option<String>,
    /// False for an alias, which leaves the database to its owner.
    owner: bool,
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("keygate-test-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        match backend {
            Backend::Sqlite => TestDb {
                backend,
                url: format!("sqlite://{}", dir.join("keygate.db").display()),
                dir,
                pg_name: None,
                owner: true,
            },
            Backend::Postgres => {
                let name = format!("keygate_test_{id}");
                let mut admin = PgConnection::establish(&postgres_admin_url())
                    .expect("PostgreSQL must run on 127.0.0.1:5432 for the tests");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .expect("create test database");
                let base = postgres_admin_url();
                let url = match base.rsplit_once('/') {
                    Some((server, _)) => format!("{server}/{name}"),
                    None => panic!("bad KEYGATE_TEST_POSTGRES_URL"),
                };
                TestDb {
                    backend,
                    url,
                    dir,
                    pg_name: Some(name),
                    owner: true,
                }
            }
        }
    }

    /// The same database for a second server; dropping it drops nothing.
    pub fn alias(&self) -> TestDb {
        TestDb {
            backend: self.backend,
            url: self.url.clone(),
            dir: self.dir.clone(),
            pg_name: self.pg_name.clone(),
            owner: false,
        }
    }

    /// A direct connection, for assertions on what is stored.
    pub fn connect(&self) -> DbConnection {
        ConnectionManager::new(DatabaseUrl::parse(&self.url).unwrap())
            .establish()
            .expect("connect to test database")
    }

    /// Everything stored, as text: the SQLite files byte for byte, or
    /// PostgreSQL's XML dump of every table.
    pub fn dump(&self) -> String {
        match self.backend {
            Backend::Sqlite => {
                let mut all = Vec::new();
                for entry in std::fs::read_dir(&self.dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("keygate.db")
                    {
                        // A -wal/-shm file may vanish while a server closes.
                        if let Ok(bytes) = std::fs::read(&path) {
                            all.extend(bytes);
                        }
                    }
                }
                String::from_utf8_lossy(&all).into_owned()
            }
            Backend::Postgres => {
                #[derive(QueryableByName)]
                struct Dump {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    dump: String,
                }
                let mut conn = PgConnection::establish(&self.url).unwrap();
                let rows: Vec<Dump> =
                    diesel::sql_query("SELECT database_to_xml(true, false, '')::text AS dump")
                        .load(&mut conn)
                        .unwrap();
                rows.into_iter().map(|r| r.dump).collect()
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(name) = &self.pg_name {
            if let Ok(mut admin) = PgConnection::establish(&postgres_admin_url()) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin);
            }
        }
    }
}

/// Settings every test server starts with; tests add or override some.
pub fn base_env(db: &TestDb) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for (k, v) in [
        ("KEYGATE_HOST", "127.0.0.1"),
        ("KEYGATE_PORT", "0"),
        ("KEYGATE_WORKERS", "2"),
        ("KEYGATE_SUPERUSER", ADMIN),
        ("KEYGATE_SUPERUSER_PASSWORD", ADMIN_PASSWORD),
        ("KEYGATE_DB_POOL_SIZE", "4"),
    ] {
        env.insert(k.to_string(), v.to_string());
    }
    env.insert("KEYGATE_DATABASE_URL".into(), db.url.clone());
    env.insert(
        "KEYGATE_DATA_DIR".into(),
        db.dir.join("data").display().to_string(),
    );
    env
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    server: Option<RunningServer>,
}

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> Self {
        let db = TestDb::new(backend);
        Self::start_on(db, extra).await
    }

    /// Starts a server over an existing database (e.g. after a restart).
    pub async fn start_on(db: TestDb, extra: &[(&str, &str)]) -> Self {
        let mut env = base_env(&db);
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_map(&env).expect("test config");
        let state = server::prepare(config).expect("prepare server");
        let running = server::start(state).await.expect("start server");
        TestApp {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            db,
            server: Some(running),
        }
    }

    /// Stops gracefully (flushing counters) and hands back the database.
    pub async fn stop(mut self) -> TestDb {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("graceful stop");
        }
        let TestApp { db, .. } = self;
        db
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn state(&self) -> &keygate::server::Services {
        &self.server.as_ref().unwrap().state
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let res = self
            .client
            .post(self.url("/api/v1/login"))
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "login as {username}");
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN, ADMIN_PASSWORD).await
    }

    /// Creates an active user through the admin API; returns (id, token).
    pub async fn create_user(&self, admin_token: &str, username: &str) -> (String, String) {
        let password = format!("{username}-password");
        let res = self
            .client
            .post(self.url("/api/v1/users/"))
            .bearer_auth(admin_token)
            .json(&json!({"username": username, "password": password, "is_active": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_string();
        (id, self.login(username, &password).await)
    }

    /// Creates a key with a session token; returns (id, full key).
    pub async fn create_key(&self, token: &str, name: &str) -> (String, String) {
        let res = self
            .client
            .post(self.url("/api/v1/api_key/"))
            .bearer_auth(token)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_string(),
            body["api_key"].as_str().unwrap().to_string(),
        )
    }

    /// GET with a key in the header; returns status and JSON body.
    pub async fn get_with_key(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let res = self
            .client
            .get(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn whoami_status(&self, key: &str) -> StatusCode {
        self.get_with_key("/api/v1/users/whoami", key).await.0
    }
}

/// Reads a JSON body and asserts its status in one step.
pub async fn expect(res: reqwest::Response, status: StatusCode) -> Value {
    let actual = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "unexpected status; body: {body}");
    body
}

pub fn path_exists(path: &Path) -> bool {
    path.exists()
}
