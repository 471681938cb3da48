//! Test harness: a real keygate server on a loopback port over a fresh
//! database (an SQLite file in a temporary directory, or a new database on
//! the real PostgreSQL server), driven over HTTP with reqwest through
//! [`RequestHelper`]: `app.as_key(&key).get(path).await`,
//! `app.as_session(&token).post_json(path, &body).await`, `app.anon()`.

#![allow(dead_code)]

pub mod fake_provider;
pub mod langflow;
pub mod upstream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use diesel::prelude::*;
use diesel::{Connection, PgConnection, RunQueryDsl};
use keygate::config::Config;
use keygate::db::{ConnectionManager, DatabaseUrl, DbConnection};
use keygate::server::{self, RunningServer};
use reqwest::{Method, StatusCode};
use serde::Serialize;
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
    /// Private: tests call through [`RequestHelper`].
    client: reqwest::Client,
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

    pub fn state(&self) -> &keygate::server::Services {
        &self.server.as_ref().unwrap().state
    }

    /// `http://host:port` of the metrics listener (`KEYGATE_METRICS_ADDR`).
    pub fn metrics_base(&self) -> Option<String> {
        let addr = self.server.as_ref()?.metrics_addr?;
        Some(format!("http://{addr}"))
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN, ADMIN_PASSWORD).await
    }

    /// Creates an active user through the admin API; returns (id, token).
    pub async fn create_user(&self, admin_token: &str, username: &str) -> (String, String) {
        let password = format!("{username}-password");
        let res = self
            .as_session(admin_token)
            .post_json(
                "/api/v1/users/",
                &json!({"username": username, "password": password, "is_active": true}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_string();
        (id, self.login(username, &password).await)
    }

    /// Creates a key with a session token; returns (id, full key).
    pub async fn create_key(&self, token: &str, name: &str) -> (String, String) {
        let res = self
            .as_session(token)
            .post_json("/api/v1/api_key/", &json!({"name": name}))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_string(),
            body["api_key"].as_str().unwrap().to_string(),
        )
    }

    /// GET with a key in the header; returns status and JSON body.
    pub async fn get_with_key(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let res = self.as_key(key).get(path).await;
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn whoami_status(&self, key: &str) -> StatusCode {
        self.get_with_key("/api/v1/users/whoami", key).await.0
    }
}

impl RequestHelper for TestApp {
    fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn base(&self) -> &str {
        &self.base
    }
}

/// How a [`Caller`] authenticates, as a client of keygate would.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    /// No credentials at all.
    Anonymous,
    /// An API key in the `x-api-key` header.
    Key(&'a str),
    /// An API key in the `x-api-key` query parameter.
    KeyInQuery(&'a str),
    /// A session token as `Authorization: Bearer …`.
    Session(&'a str),
    /// A session token in the `keygate_session` cookie, with the page's
    /// CSRF token in `x-csrf-token` when given.
    Cookie {
        token: &'a str,
        csrf: Option<&'a str>,
    },
}

/// Anything the tests talk HTTP to: an in-process [`TestApp`] or the real
/// binary. Implement `client` and `base`; the callers come for free, in
/// the style of crates.io's `RequestHelper`:
///
/// ```ignore
/// app.as_key(&key).get("/api/v1/users/whoami").await
/// app.as_session(&token).post_json("/api/v1/api_key/", &json!({"name": "ci"})).await
/// app.anon().get("/health").await
/// ```
pub trait RequestHelper {
    fn client(&self) -> &reqwest::Client;
    /// `http://host:port`, without a trailing slash.
    fn base(&self) -> &str;

    fn caller<'a>(&'a self, auth: Auth<'a>) -> Caller<'a> {
        Caller {
            client: self.client(),
            base: self.base(),
            auth,
        }
    }

    /// No credentials.
    fn anon(&self) -> Caller<'_> {
        self.caller(Auth::Anonymous)
    }

    /// An API key in the `x-api-key` header.
    fn as_key<'a>(&'a self, key: &'a str) -> Caller<'a> {
        self.caller(Auth::Key(key))
    }

    /// An API key in the `x-api-key` query parameter.
    fn as_key_in_query<'a>(&'a self, key: &'a str) -> Caller<'a> {
        self.caller(Auth::KeyInQuery(key))
    }

    /// A session token (or anything else) as a Bearer token.
    fn as_session<'a>(&'a self, token: &'a str) -> Caller<'a> {
        self.caller(Auth::Session(token))
    }

    /// A session token in the session cookie, without a CSRF token (add one
    /// with [`Caller::with_csrf`]).
    fn as_cookie<'a>(&'a self, token: &'a str) -> Caller<'a> {
        self.caller(Auth::Cookie { token, csrf: None })
    }

    /// Signs in with the form; returns the whole answer (session token and
    /// CSRF token).
    async fn login_answer(&self, username: &str, password: &str) -> Value {
        let res = self
            .anon()
            .post_form(
                "/api/v1/login",
                &[("username", username), ("password", password)],
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK, "login as {username}");
        res.json().await.unwrap()
    }

    /// Signs in with the form; returns the session token.
    async fn login(&self, username: &str, password: &str) -> String {
        let body = self.login_answer(username, password).await;
        body["access_token"].as_str().unwrap().to_string()
    }
}

/// One client of one server, authenticated one way. The shortcuts send at
/// once and hand back the response (a transport error fails the test);
/// [`Caller::request`] gives a builder, with the credentials already on it,
/// for custom headers, raw or form bodies and the like.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    auth: Auth<'a>,
}

impl<'a> Caller<'a> {
    /// Adds the CSRF token to a cookie session.
    pub fn with_csrf(mut self, csrf: &'a str) -> Self {
        match &mut self.auth {
            Auth::Cookie { csrf: slot, .. } => *slot = Some(csrf),
            other => panic!("a CSRF token goes with a cookie session, not {other:?}"),
        }
        self
    }

    /// The same credentials through another client (e.g. one whose
    /// connections the test closes by dropping it).
    pub fn with_client(mut self, client: &'a reqwest::Client) -> Self {
        self.client = client;
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the credentials applied, to finish and send.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match self.auth {
            Auth::Anonymous => request,
            Auth::Key(key) => request.header("x-api-key", key),
            Auth::KeyInQuery(key) => request.query(&[("x-api-key", key)]),
            Auth::Session(token) => request.bearer_auth(token),
            Auth::Cookie { token, csrf } => {
                let request = request.header("cookie", format!("keygate_session={token}"));
                match csrf {
                    Some(csrf) => request.header("x-csrf-token", csrf),
                    None => request,
                }
            }
        }
    }

    /// Sends a request without a body.
    pub async fn send(&self, method: Method, path: &str) -> reqwest::Response {
        self.request(method, path).send().await.unwrap()
    }

    /// Sends a JSON body.
    pub async fn send_json<T: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &T,
    ) -> reqwest::Response {
        self.request(method, path).json(body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.send(Method::GET, path).await
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.send(Method::DELETE, path).await
    }

    /// A POST without a body.
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.send(Method::POST, path).await
    }

    pub async fn post_json<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> reqwest::Response {
        self.send_json(Method::POST, path, body).await
    }

    pub async fn put_json<T: Serialize + ?Sized>(&self, path: &str, body: &T) -> reqwest::Response {
        self.send_json(Method::PUT, path, body).await
    }

    pub async fn patch_json<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> reqwest::Response {
        self.send_json(Method::PATCH, path, body).await
    }

    /// A POST of an `application/x-www-form-urlencoded` body.
    pub async fn post_form<T: Serialize + ?Sized>(
        &self,
        path: &str,
        form: &T,
    ) -> reqwest::Response {
        self.request(Method::POST, path)
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

/// Reads a JSON body (`null` when there is none) and asserts its status in
/// one step; a failure names the URL and shows the body.
pub async fn expect(res: reqwest::Response, status: StatusCode) -> Value {
    let actual = res.status();
    let url = res.url().clone();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "unexpected status from {url}; body: {body}");
    body
}

pub fn path_exists(path: &Path) -> bool {
    path.exists()
}
