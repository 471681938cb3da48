//! Operating the real binary: CLI, bootstrap, graceful shutdown, logs,
//! error shapes and database outages.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{
    base_env, expect, Backend, RequestHelper, TestApp, TestDb, ADMIN, ADMIN_PASSWORD,
};

/// The `keygate` binary run with only the given environment.
pub(crate) fn keygate(env: &std::collections::HashMap<String, String>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEYGATE_LOG", "info")
        .envs(env);
    command
}

/// A `keygate serve` process whose log lines are collected, and a client
/// of its own (reqwest's defaults) to talk to it.
pub(crate) struct Served {
    child: Child,
    base: String,
    client: reqwest::Client,
    log: mpsc::Receiver<String>,
    early_log: Vec<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Served {
    pub(crate) fn start(env: &std::collections::HashMap<String, String>) -> Self {
        Self::start_with_args(env, &["serve"])
    }

    pub(crate) fn start_with_args(
        env: &std::collections::HashMap<String, String>,
        args: &[&str],
    ) -> Self {
        let mut child = keygate(env)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keygate");
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The server says where it listens once it is ready (as text or,
        // with KEYGATE_LOG_FORMAT=json, as a JSON line).
        let mut base = None;
        let mut early_log = Vec::new();
        for line in log.iter() {
            early_log.push(line.clone());
            if !line.contains("keygate is listening") {
                continue;
            }
            let addr = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(json) => json["addr"].as_str().map(str::to_string),
                Err(_) => line
                    .split("addr=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_string),
            };
            if let Some(addr) = addr {
                base = Some(format!("http://{addr}"));
                break;
            }
        }
        Served {
            child,
            base: base.expect("keygate did not start"),
            client: reqwest::Client::new(),
            log,
            early_log,
            stdout,
        }
    }

    /// Sends SIGTERM, waits for the exit, and returns (stdout, log).
    pub(crate) fn terminate(self) -> (String, String) {
        self.sigterm();
        let (exit, stdout, log) = self.wait_for_exit();
        assert!(exit.success(), "keygate exited with {exit}");
        (stdout, log)
    }

    /// Sends SIGTERM and returns at once.
    pub(crate) fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill only sends a signal to the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Whether the process has ended (without waiting).
    pub(crate) fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits for a log line containing `needle` (keeping every line read
    /// for [`Served::wait_for_exit`]), for at most `patience`.
    pub(crate) fn await_log(&mut self, needle: &str, patience: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.early_log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    self.early_log.join("\n")
                ),
            }
        }
    }

    /// Waits for the exit; returns its status, the standard output and the
    /// whole log.
    pub(crate) fn wait_for_exit(mut self) -> (std::process::ExitStatus, String, String) {
        let exit = self.child.wait().unwrap();
        let mut log = self.early_log;
        log.extend(self.log.iter());
        (exit, self.stdout.join().unwrap(), log.join("\n"))
    }
}

impl RequestHelper for Served {
    fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn base(&self) -> &str {
        &self.base
    }
}

pub(crate) fn binary_env(db: &TestDb) -> std::collections::HashMap<String, String> {
    let mut env = base_env(db);
    env.insert("KEYGATE_USAGE_FLUSH_MS".into(), "3600000".into());
    // These tests stop the binary often; no load balancer needs a drain.
    env.insert("KEYGATE_SHUTDOWN_DRAIN_SECONDS".into(), "0".into());
    env
}

crate::on_both_backends!(sigterm_flushes_counts_and_logs_never_hold_keys);

async fn sigterm_flushes_counts_and_logs_never_hold_keys(backend: Backend) {
    let db = TestDb::new(backend);
    let served = Served::start(&binary_env(&db));
    let token = served.login(ADMIN, ADMIN_PASSWORD).await;
    let created = expect(
        served
            .as_session(&token)
            .post_json("/api/v1/api_key/", &json!({"name": "term"}))
            .await,
        StatusCode::OK,
    )
    .await;
    let key = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_str().unwrap().to_string();
    for i in 0..7 {
        let caller = if i % 2 == 0 {
            served.as_key_in_query(&key)
        } else {
            served.as_key(&key)
        };
        assert_eq!(
            caller.get("/api/v1/users/whoami").await.status(),
            StatusCode::OK
        );
    }
    let (_, log) = served.terminate();
    assert!(
        log.contains("x-api-key=REDACTED"),
        "the access log shows redacted query keys"
    );
    assert!(!log.contains(&key), "a key appeared in the log");
    assert!(!log.contains(&key[3..20]));
    assert!(!log.contains(ADMIN_PASSWORD));

    use diesel::prelude::*;
    use keygate::db::schema::api_keys;
    let mut conn = db.connect();
    let (uses, last_used): (i64, Option<chrono::NaiveDateTime>) = api_keys::table
        .find(&key_id)
        .select((api_keys::total_uses, api_keys::last_used_at))
        .first(&mut conn)
        .unwrap();
    assert_eq!(uses, 7, "every use is written at shutdown");
    assert!(last_used.is_some());
}

#[actix_web::test]
async fn first_start_prints_a_generated_superuser_password_once() {
    let db = TestDb::new(Backend::Sqlite);
    let mut env = binary_env(&db);
    env.remove("KEYGATE_SUPERUSER_PASSWORD");
    let served = Served::start(&env);
    let (stdout, log) = served.terminate();
    let password = stdout
        .lines()
        .skip_while(|l| !l.contains("shown only now"))
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains("shown only now"))
        .expect("a generated password on the terminal")
        .to_string();
    assert!(password.len() >= 16);
    assert!(
        !log.contains(&password),
        "the password must not reach the log"
    );

    let served = Served::start(&env);
    served.login(ADMIN, &password).await;
    let (stdout, _) = served.terminate();
    assert!(
        !stdout.contains(&password),
        "printed only on the first start"
    );
}

#[actix_web::test]
async fn serve_loads_an_env_file_and_flags_override_it() {
    let db = TestDb::new(Backend::Sqlite);
    let mut env = binary_env(&db);
    let password = "from-the-env-file-123";
    env.remove("KEYGATE_SUPERUSER_PASSWORD");
    env.remove("KEYGATE_SUPERUSER");
    env.remove("KEYGATE_PORT");
    // The env file names a port the test holds: were `--port 0` not to
    // override it, keygate could not bind and would not start (even as
    // root, which may bind any free port).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let env_file = db.dir.join("keygate.env");
    std::fs::write(
        &env_file,
        format!(
            "KEYGATE_SUPERUSER=operator\nKEYGATE_SUPERUSER_PASSWORD={password}\nKEYGATE_PORT={taken_port}\n"
        ),
    )
    .unwrap();
    let served = Served::start_with_args(
        &env,
        &[
            "serve",
            "--port",
            "0",
            "--env-file",
            env_file.to_str().unwrap(),
        ],
    );
    assert!(
        !served.base.ends_with(&format!(":{taken_port}")),
        "{} listens on the env file's port",
        served.base
    );
    let res = served
        .anon()
        .post_form(
            "/api/v1/login",
            &[("username", "operator"), ("password", password)],
        )
        .await;
    expect(res, StatusCode::OK).await;
    served.terminate();
    drop(taken);
}

#[actix_web::test]
async fn cli_api_key_on_a_fresh_database_prints_only_the_key_on_stdout() {
    let db = TestDb::new(Backend::Sqlite);
    let mut env = binary_env(&db);
    env.remove("KEYGATE_SUPERUSER_PASSWORD");
    let output = keygate(&env)
        .args(["api-key", "--name", "first"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].starts_with("sk-") && lines[0].len() == 46);
    // The superuser created on the way still gets its one-time password,
    // on standard error.
    assert!(String::from_utf8_lossy(&output.stderr).contains("shown only now"));
}

#[actix_web::test]
async fn cli_migrates_creates_keys_and_guards_superuser_creation() {
    let db = TestDb::new(Backend::Sqlite);
    let env = binary_env(&db);
    let migrate = keygate(&env).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let output = keygate(&env)
        .args(["api-key", "--name", "from-cli"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("sk-") && key.len() == 46, "{key}");

    let refused = keygate(&env)
        .args([
            "superuser",
            "--username",
            "root2",
            "--password",
            "root2-password",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("KEYGATE_ENABLE_SUPERUSER_CLI"));

    let mut allowed_env = env.clone();
    allowed_env.insert("KEYGATE_ENABLE_SUPERUSER_CLI".into(), "true".into());
    let allowed = keygate(&allowed_env)
        .args([
            "superuser",
            "--username",
            "root2",
            "--password",
            "root2-password",
        ])
        .output()
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );

    let app = TestApp::start_on(db, &[]).await;
    let (status, me) = app.get_with_key("/api/v1/users/whoami", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], ADMIN);
    let token = app.login("root2", "root2-password").await;
    let me = expect(
        app.as_session(&token).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["is_superuser"], true);
}

#[actix_web::test]
async fn errors_are_json_with_the_right_status() {
    let app = TestApp::start_with(Backend::Sqlite, &[("KEYGATE_MAX_BODY_BYTES", "1024")]).await;
    let token = app.admin_token().await;
    let admin = app.as_session(&token);
    let big = json!({"name": "x".repeat(4096)});
    let res = admin.post_json("/api/v1/api_key/", &big).await;
    assert!(expect(res, StatusCode::PAYLOAD_TOO_LARGE).await["detail"].is_string());
    let res = app.anon().get("/no/such/route").await;
    assert_eq!(
        expect(res, StatusCode::NOT_FOUND).await,
        json!({"detail": "Not Found"})
    );
    let res = admin.send(Method::PUT, "/api/v1/api_key/").await;
    assert!(expect(res, StatusCode::METHOD_NOT_ALLOWED).await["detail"].is_string());
    let res = app.anon().get("/health").await;
    assert_eq!(expect(res, StatusCode::OK).await["status"], "ok");
    // A proxy's Basic auth is not ours: it neither blocks open routes nor
    // authenticates anyone.
    let res = app
        .anon()
        .request(Method::GET, "/health")
        .basic_auth("proxy-user", Some("proxy-password"))
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    let res = app
        .anon()
        .request(Method::GET, "/api/v1/users/whoami")
        .basic_auth("admin", Some(crate::common::ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::UNAUTHORIZED).await;
}

/// A TCP relay to PostgreSQL that the test can cut and restore. It runs
/// on a runtime of its own: keygate connects synchronously at start.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Relay {
    fn start(target: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let target = target.to_string();
        let (accept_up, accept_connections) = (up.clone(), connections.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped at once: the database is "down"
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_connections.lock().unwrap().push(task);
            }
        });
        Relay {
            port,
            up,
            connections,
            runtime: Some(runtime),
        }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[actix_web::test]
async fn a_database_outage_is_a_503_and_the_service_recovers() {
    let db = TestDb::new(Backend::Postgres);
    let relay = Relay::start("127.0.0.1:5432");
    let through_relay = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port));
    assert_ne!(through_relay, db.url);
    let app = TestApp::start_on(
        db,
        &[
            ("KEYGATE_DATABASE_URL", through_relay.as_str()),
            ("KEYGATE_DB_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let token = app.admin_token().await;
    let admin = app.as_session(&token);
    let keys = "/api/v1/api_key/";
    expect(admin.get(keys).await, StatusCode::OK).await;

    relay.cut();
    let down = expect(admin.get(keys).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(down["detail"].as_str().unwrap().contains("database"));
    let health = app.anon().get("/health_check").await;
    expect(health, StatusCode::SERVICE_UNAVAILABLE).await;

    relay.restore();
    expect(admin.get(keys).await, StatusCode::OK).await;
}
