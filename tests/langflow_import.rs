//! `keygate import-langflow` against the committed databases of a real
//! Langflow 1.13 (`tests/fixtures/langflow/`, made by its
//! `make-fixture.sh`): its SQLite file, and a `pg_dump` of its PostgreSQL
//! database loaded into a fresh PostgreSQL database of the test's own. The
//! real binary imports from each into the database of a running keygate
//! server, on both backends, and every recorded key, password, variable
//! and flow then works through that server.

use std::path::PathBuf;

use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::langflow::StandInLangflow;
use crate::common::upstream::FakeUpstream;
use crate::common::{base_env, expect, Backend, RequestHelper, TestApp, TestDb};
use crate::gateway::{create_flow, store_generic_secret};

crate::on_both_backends!(
    everything_recorded_in_langflows_sqlite_works_through_keygate_after_the_import,
    everything_recorded_in_langflows_postgres_works_through_keygate_after_the_import,
    a_dry_run_from_sqlite_writes_nothing_and_tells_what_it_would_do,
    a_dry_run_from_postgres_writes_nothing_and_tells_what_it_would_do,
    an_unknown_sqlite_schema_is_refused_and_nothing_is_written,
    an_unknown_postgres_schema_is_refused_and_nothing_is_written,
    a_username_held_by_another_account_refuses_the_import,
);

const ALLOW_PRIVATE: (&str, &str) = ("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true");

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/langflow")
}

fn fixture_db() -> String {
    fixture_dir().join("langflow-1.13.db").display().to_string()
}

/// What `make-fixture.sh` recorded when it made one database.
fn recorded_in(file: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir().join(file)).expect(file);
    serde_json::from_str(&text).expect("the recorded fixture is JSON")
}

/// What the SQLite fixture was given.
fn recorded() -> Value {
    recorded_in("keys.json")
}

/// Which of Langflow's databases the import reads.
#[derive(Clone, Copy, Debug)]
enum Source {
    Sqlite,
    Postgres,
}

/// A Langflow 1.13 database for one test, and what was recorded when it
/// was made.
struct LangflowDb {
    /// What `--from` is given.
    from: String,
    recorded: Value,
    /// The PostgreSQL database the dump was loaded into, dropped with it.
    pg: Option<TestDb>,
}

impl LangflowDb {
    /// The SQLite fixture as it is committed (the import opens it
    /// read-only), or the PostgreSQL dump loaded into a new database.
    async fn open(source: Source) -> Self {
        match source {
            Source::Sqlite => LangflowDb {
                from: fixture_db(),
                recorded: recorded(),
                pg: None,
            },
            Source::Postgres => {
                let db = TestDb::new(Backend::Postgres);
                let dump = fixture_dir().join("langflow-1.13.pg.sql");
                let output = tokio::process::Command::new("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db.url, "-f"])
                    .arg(&dump)
                    .output()
                    .await
                    .expect("run psql (PostgreSQL's client) to load the Langflow dump");
                assert!(
                    output.status.success(),
                    "loading {} failed: {}",
                    dump.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
                LangflowDb {
                    // As Langflow's LANGFLOW_DATABASE_URL would name it.
                    from: db.url.replacen("postgres://", "postgresql+psycopg://", 1),
                    recorded: recorded_in("keys.pg.json"),
                    pg: Some(db),
                }
            }
        }
    }

    /// Everything the Langflow database holds, to show the import wrote
    /// nothing there: the SQLite file's bytes, or PostgreSQL's XML dump.
    fn snapshot(&self) -> Vec<u8> {
        match &self.pg {
            Some(db) => db.dump().into_bytes(),
            None => std::fs::read(&self.from).unwrap(),
        }
    }
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `keygate import-langflow ARGS` against the app's database.
async fn import(app: &TestApp, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEYGATE_LOG", "warn")
        .env(ALLOW_PRIVATE.0, ALLOW_PRIVATE.1)
        .envs(base_env(&app.db))
        .arg("import-langflow")
        .args(args)
        .output()
        .await
        .expect("run keygate import-langflow");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// No key, password, secret or credential value of the fixture, nor a
/// password hash, appears in what the import printed.
fn assert_nothing_secret_printed(run: &Run, fixture: &Value) {
    let printed = format!("{}{}", run.stdout, run.stderr);
    let mut secrets: Vec<String> = vec![fixture["secret_key"].as_str().unwrap().to_string()];
    for key in fixture["keys"].as_array().unwrap() {
        secrets.push(key["key"].as_str().unwrap().to_string());
    }
    for user in fixture["users"].as_array().unwrap() {
        secrets.push(user["password"].as_str().unwrap().to_string());
    }
    for variable in fixture["variables"].as_array().unwrap() {
        if variable["type"] == "Credential" {
            secrets.push(variable["value"].as_str().unwrap().to_string());
        }
    }
    for secret in secrets {
        assert!(!printed.contains(&secret), "the import printed a secret");
    }
    assert!(
        !printed.contains("$2b$"),
        "the import printed a password hash"
    );
}

/// How many rows keygate's tables hold: users, keys, variables, flows.
fn counts(app: &TestApp) -> (i64, i64, i64, i64) {
    use keygate::db::schema::{api_keys, flows, users, variables};
    let mut conn = app.db.connect();
    (
        users::table.count().get_result(&mut conn).unwrap(),
        api_keys::table.count().get_result(&mut conn).unwrap(),
        variables::table.count().get_result(&mut conn).unwrap(),
        flows::table.count().get_result(&mut conn).unwrap(),
    )
}

fn stored_password_hash(app: &TestApp, username: &str) -> String {
    use keygate::db::schema::users;
    let mut conn = app.db.connect();
    users::table
        .filter(users::username.eq(username))
        .select(users::password_hash)
        .first(&mut conn)
        .unwrap()
}

async fn everything_recorded_in_langflows_sqlite_works_through_keygate_after_the_import(
    backend: Backend,
) {
    everything_recorded_works_through_keygate_after_the_import(backend, Source::Sqlite).await
}

async fn everything_recorded_in_langflows_postgres_works_through_keygate_after_the_import(
    backend: Backend,
) {
    everything_recorded_works_through_keygate_after_the_import(backend, Source::Postgres).await
}

async fn everything_recorded_works_through_keygate_after_the_import(
    backend: Backend,
    source: Source,
) {
    let langflow_db = LangflowDb::open(source).await;
    let langflow_before = langflow_db.snapshot();
    let fixture = &langflow_db.recorded;
    let flows = fixture["flows"].as_array().unwrap();
    let echo = flows
        .iter()
        .find(|f| f["endpoint_name"] == "echo-flow")
        .unwrap();
    let echo_id = echo["id"].as_str().unwrap();
    let langflow = StandInLangflow::start_for(echo_id);
    let app = TestApp::start_with(backend, &[ALLOW_PRIVATE]).await;
    let keys = fixture["keys"].as_array().unwrap();
    let first_key = keys[0]["key"].as_str().unwrap();
    // The server runs (its key filter loaded) before the import.
    assert_eq!(app.whoami_status(first_key).await, StatusCode::UNAUTHORIZED);

    let run = import(
        &app,
        &[
            "--from",
            &langflow_db.from,
            "--langflow-secret-key",
            fixture["secret_key"].as_str().unwrap(),
            "--langflow-url",
            &langflow.base,
        ],
    )
    .await;
    assert!(run.success, "import failed: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("Langflow 1.13 database"),
        "{}",
        run.stdout
    );
    assert_nothing_secret_printed(&run, fixture);

    // Every key works at once on the running server, in the header and
    // in the query, as its Langflow owner; the expired one does not.
    for key in keys {
        let text = key["key"].as_str().unwrap();
        let owner = key["owner"].as_str().unwrap();
        if key["state"] == "expired" {
            assert_eq!(app.whoami_status(text).await, StatusCode::UNAUTHORIZED);
            continue;
        }
        let user = fixture["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == owner)
            .unwrap();
        for caller in [app.as_key(text), app.as_key_in_query(text)] {
            let me = expect(caller.get("/api/v1/users/whoami").await, StatusCode::OK).await;
            assert_eq!(me["username"], owner, "key {}", key["name"]);
            assert_eq!(me["id"], user["id"]);
            assert_eq!(me["is_superuser"], user["is_superuser"]);
        }
    }
    // The key list shows the imported keys with their Langflow ids and names.
    let admin_key = keys.iter().find(|k| k["name"] == "admin script").unwrap();
    let listed = expect(
        app.as_key(admin_key["key"].as_str().unwrap())
            .get("/api/v1/api_key/")
            .await,
        StatusCode::OK,
    )
    .await;
    let listed = listed["api_keys"].as_array().unwrap();
    assert!(listed
        .iter()
        .any(|k| k["id"] == admin_key["id"] && k["name"] == "admin script"));
    // Langflow's times come over as the instants they were (on
    // PostgreSQL a `timestamp with time zone`): the expired key's expiry
    // is the one Langflow was given.
    let expired = keys.iter().find(|k| k["state"] == "expired").unwrap();
    let listed_expired = listed.iter().find(|k| k["id"] == expired["id"]).unwrap();
    assert_eq!(listed_expired["expires_at"], "2024-01-01T00:00:00Z");

    // Langflow's passwords sign in; the bcrypt hash becomes argon2id.
    let admin = &fixture["users"][0];
    let admin_name = admin["username"].as_str().unwrap();
    let admin_password = admin["password"].as_str().unwrap();
    assert!(stored_password_hash(&app, admin_name).starts_with("$2b$"));
    let token = app.login(admin_name, admin_password).await;
    assert!(stored_password_hash(&app, admin_name).starts_with("$argon2id$"));
    let again = app.login(admin_name, admin_password).await;
    assert_ne!(token, again);
    let wrong = app
        .anon()
        .post_form(
            "/api/v1/login",
            &[("username", admin_name), ("password", "not the password")],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // The Credential variable's value is the one Langflow was given: a
    // run injects it into a local upstream.
    let credential = fixture["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "OPENAI_API_KEY")
        .unwrap();
    let mut upstream = FakeUpstream::start();
    let probe = create_flow(
        &app,
        &token,
        json!({
            "name": "probe",
            "upstream": {"url": upstream.url("/probe"), "credential": {"variable": "OPENAI_API_KEY"}}
        }),
    )
    .await;
    let res = app
        .as_key(admin_key["key"].as_str().unwrap())
        .post_json(
            &format!("/api/v1/run/{}", probe["id"].as_str().unwrap()),
            &json!({"inputs": {}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let received = upstream.next_request().await;
    assert_eq!(
        received.header("authorization").unwrap(),
        format!("Bearer {}", credential["value"].as_str().unwrap())
    );
    // The Generic one is readable as it was.
    let variables = expect(
        app.as_session(&token).get("/api/v1/variables/").await,
        StatusCode::OK,
    )
    .await;
    assert!(variables
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "REGION" && v["value"] == "eu-west-1"));

    // The imported flow runs through keygate to Langflow under its own id
    // and its endpoint name, once its owner stored the key keygate sends.
    store_generic_secret(&app, &token, &langflow.key, None).await;
    for identifier in [echo_id, "echo-flow"] {
        let res = app
            .as_key(admin_key["key"].as_str().unwrap())
            .post_json(
                &format!("/api/v1/run/{identifier}"),
                &json!({"input_value": "hi", "tweaks": {}}),
            )
            .await;
        let answer = expect(res, StatusCode::OK).await;
        assert_eq!(
            answer["outputs"][0]["outputs"][0]["results"]["message"]["text"],
            "echo: hi"
        );
    }
    let mut langflow = langflow;
    let reached = langflow.next_request().await;
    assert_eq!(reached.path, format!("/api/v1/run/{echo_id}"));
    assert_eq!(reached.header("x-api-key"), Some(langflow.key.as_str()));

    // A second import changes nothing, and says so.
    let before = counts(&app);
    let second = import(
        &app,
        &[
            "--from",
            &langflow_db.from,
            "--langflow-secret-key",
            fixture["secret_key"].as_str().unwrap(),
            "--langflow-url",
            &langflow.base,
        ],
    )
    .await;
    assert!(second.success, "{}{}", second.stdout, second.stderr);
    assert!(
        second.stdout.contains("nothing to import: 0 to import"),
        "{}",
        second.stdout
    );
    assert_eq!(counts(&app), before);
    assert!(stored_password_hash(&app, admin_name).starts_with("$argon2id$"));
    // Langflow's database was only read.
    assert!(
        langflow_db.snapshot() == langflow_before,
        "the import changed Langflow's database"
    );
}

async fn a_dry_run_from_sqlite_writes_nothing_and_tells_what_it_would_do(backend: Backend) {
    a_dry_run_writes_nothing_and_tells_what_it_would_do(backend, Source::Sqlite).await
}

async fn a_dry_run_from_postgres_writes_nothing_and_tells_what_it_would_do(backend: Backend) {
    a_dry_run_writes_nothing_and_tells_what_it_would_do(backend, Source::Postgres).await
}

async fn a_dry_run_writes_nothing_and_tells_what_it_would_do(backend: Backend, source: Source) {
    let langflow_db = LangflowDb::open(source).await;
    let fixture = &langflow_db.recorded;
    let app = TestApp::start(backend).await;
    let before = counts(&app);
    let run = import(&app, &["--from", &langflow_db.from, "--dry-run"]).await;
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("Langflow 1.13 database"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("would import"), "{}", run.stdout);
    assert!(run.stdout.contains("nothing was written"), "{}", run.stdout);
    // Without Langflow's secret key, what needs it is named, not guessed.
    assert!(
        run.stdout.contains("pass --langflow-secret-key"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("pass --langflow-url"), "{}", run.stdout);
    assert_nothing_secret_printed(&run, fixture);
    assert_eq!(counts(&app), before);
    let key = fixture["keys"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(app.whoami_status(&key).await, StatusCode::UNAUTHORIZED);
}

async fn an_unknown_sqlite_schema_is_refused_and_nothing_is_written(backend: Backend) {
    let app = TestApp::start(backend).await;
    let copy = app.db.dir.join("langflow-unknown.db");
    std::fs::copy(fixture_db(), &copy).unwrap();
    {
        let mut conn = diesel::SqliteConnection::establish(&copy.display().to_string()).unwrap();
        diesel::sql_query("UPDATE alembic_version SET version_num = 'deadbeef0001'")
            .execute(&mut conn)
            .unwrap();
    }
    assert_unknown_schema_refused(&app, &copy.display().to_string()).await;
    // A file that is not there is an error, never a new database.
    let missing = app.db.dir.join("no-such-langflow.db");
    let run = import(&app, &["--from", &missing.display().to_string()]).await;
    assert!(!run.success && run.stderr.contains("no Langflow database file"));
    assert!(!missing.exists());
}

async fn an_unknown_postgres_schema_is_refused_and_nothing_is_written(backend: Backend) {
    let langflow_db = LangflowDb::open(Source::Postgres).await;
    {
        let db = langflow_db.pg.as_ref().unwrap();
        let mut conn = diesel::PgConnection::establish(&db.url).unwrap();
        diesel::sql_query("UPDATE alembic_version SET version_num = 'deadbeef0001'")
            .execute(&mut conn)
            .unwrap();
    }
    let app = TestApp::start(backend).await;
    assert_unknown_schema_refused(&app, &langflow_db.from).await;
}

/// The import from `from` (whose schema version is `deadbeef0001`) fails,
/// naming it and the known ones, and writes nothing.
async fn assert_unknown_schema_refused(app: &TestApp, from: &str) {
    let before = counts(app);
    let run = import(app, &["--from", from]).await;
    assert!(!run.success);
    assert!(
        run.stderr
            .contains("unknown Langflow schema version deadbeef0001")
            && run.stderr.contains("Langflow 1.13 (e5a7c9b1d3f2)"),
        "{}",
        run.stderr
    );
    assert_eq!(counts(app), before);
}

async fn a_username_held_by_another_account_refuses_the_import(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    app.create_user(&token, "second-user").await;
    let before = counts(&app);
    let run = import(&app, &["--from", &fixture_db()]).await;
    assert!(!run.success);
    assert!(
        run.stdout.contains("CONFLICT") && run.stderr.contains("nothing was imported"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(counts(&app), before);
    // Skipping conflicts imports the rest, and nothing of the other account.
    let run = import(&app, &["--from", &fixture_db(), "--skip-conflicts"]).await;
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    let fixture = recorded();
    for key in fixture["keys"].as_array().unwrap() {
        if key["owner"] == "second-user" {
            assert_eq!(
                app.whoami_status(key["key"].as_str().unwrap()).await,
                StatusCode::UNAUTHORIZED
            );
        }
    }
    let admin_key = fixture["keys"][0]["key"].as_str().unwrap();
    let me = expect(
        app.as_key(admin_key).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["username"], "langflow-admin");
}
