//! Unknown keys are refused from memory (the key filter), and no stored
//! key is ever refused: not one created a moment ago on this instance, on
//! another instance, or by another process (the `api-key` command).

use std::collections::HashMap;

use reqwest::StatusCode;

use crate::common::{base_env, Backend, RequestHelper, TestApp, ADMIN};
use crate::ops::keygate;

crate::on_both_backends!(
    unknown_keys_are_refused_without_a_database_lookup,
    a_key_made_by_the_cli_works_at_once_on_the_running_server,
);

/// Thousands of keys written behind a running SQLite server's back (a bulk
/// import): the newest one works on the first try.
#[actix_web::test]
async fn keys_bulk_written_by_another_process_work_at_once_on_sqlite() {
    use keygate::keys::store;
    let app = TestApp::start_with(Backend::Sqlite, &SETTINGS).await;
    app.state().keys.filter().loaded().await;
    let admin = app.admin_token().await;
    let (_, key) = app.create_key(&admin, "real").await;
    let owner = app.as_key(&key).get("/api/v1/users/whoami").await;
    let owner_id = owner.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conn = app.db.connect();
    let mut last = String::new();
    keygate::db::transaction(&mut conn, |conn| {
        for n in 0..2500 {
            last = made_up(100_000 + n);
            let hash = keygate::token::TokenDigest::of(&last).to_hash();
            store::insert(
                conn,
                store::NewKey {
                    user_id: &owner_id,
                    name: Some("bulk"),
                    key_hash: hash.as_str(),
                    display_prefix: "sk-bulk",
                    expires_at: None,
                    flow_id: None,
                    scopes: None,
                    allowed_ips: None,
                    rate_limit: None,
                },
            )?;
        }
        Ok::<_, keygate::error::AppError>(())
    })
    .unwrap();
    for n in [2499, 0, 1234] {
        assert_eq!(
            app.whoami_status(&made_up(100_000 + n)).await,
            StatusCode::OK
        );
    }
    // Once reloaded, the filter refuses from memory again.
    app.state().keys.filter().loaded().await;
    let refused = app.state().keys.filter().refused();
    assert_eq!(
        app.whoami_status(&made_up(1)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.whoami_status(&last).await, StatusCode::OK);
    assert!(app.state().keys.filter().refused() > refused);
}

/// A well-formed key that was never issued.
fn made_up(n: usize) -> String {
    format!("sk-{:0>43}", format!("madeup{n}"))
}

const SETTINGS: [(&str, &str); 1] = [("KEYGATE_KEY_FAILURES_PER_MINUTE", "0")];

async fn unknown_keys_are_refused_without_a_database_lookup(backend: Backend) {
    let app = TestApp::start_with(backend, &SETTINGS).await;
    app.state().keys.filter().loaded().await;
    let admin = app.admin_token().await;
    let (_, key) = app.create_key(&admin, "real").await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::OK);

    let lookups = app.state().keys.database_lookups();
    let refused = app.state().keys.filter().refused();
    for n in 0..200 {
        assert_eq!(
            app.whoami_status(&made_up(n)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.state().keys.database_lookups(),
        lookups,
        "made-up keys reached the database"
    );
    assert_eq!(app.state().keys.filter().refused() - refused, 200);

    // Keys created after the filter loaded work at once, many in a row.
    for n in 0..20 {
        let (_, fresh) = app.create_key(&admin, &format!("fresh-{n}")).await;
        assert_eq!(app.whoami_status(&fresh).await, StatusCode::OK);
    }
    // And a restart loads every stored key.
    let db = app.stop().await;
    let app = TestApp::start_on(db, &SETTINGS).await;
    app.state().keys.filter().loaded().await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    assert_eq!(
        app.whoami_status(&made_up(0)).await,
        StatusCode::UNAUTHORIZED
    );
}

/// The `api-key` command, run as its own process against the database a
/// running server uses, while that server's filter is loaded.
fn cli_key(env: &HashMap<String, String>) -> String {
    let output = keygate(env)
        .args(["api-key", "--user", ADMIN, "--name", "from-cli"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

async fn a_key_made_by_the_cli_works_at_once_on_the_running_server(backend: Backend) {
    let app = TestApp::start_with(backend, &SETTINGS).await;
    app.state().keys.filter().loaded().await;
    // The server's filter is loaded and has refused made-up keys from
    // memory: the CLI's key must still be accepted on the first try.
    assert_eq!(
        app.whoami_status(&made_up(1)).await,
        StatusCode::UNAUTHORIZED
    );
    let env = base_env(&app.db);
    for _ in 0..3 {
        let key = cli_key(&env);
        assert!(key.starts_with("sk-"), "{key}");
        assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    }
}

/// A key created on one instance works on another the moment the create
/// returned, while both filters are loaded and refusing from memory.
#[actix_web::test]
async fn a_key_created_on_one_instance_works_on_the_other_at_once() {
    let first = TestApp::start_with(Backend::Postgres, &SETTINGS).await;
    let second = TestApp::start_on(first.db.alias(), &SETTINGS).await;
    first.state().keys.filter().loaded().await;
    second.state().keys.filter().loaded().await;
    let admin = first.admin_token().await;
    let refused = second.state().keys.filter().refused();
    assert_eq!(
        second.whoami_status(&made_up(2)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(second.state().keys.filter().refused(), refused + 1);
    for n in 0..30 {
        let (_, key) = first.create_key(&admin, &format!("k{n}")).await;
        assert_eq!(second.whoami_status(&key).await, StatusCode::OK, "key {n}");
    }
}
