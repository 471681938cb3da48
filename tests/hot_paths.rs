//! What a verified caller does next is served from memory: `whoami` from
//! the cached principal, a run from cached flows and decrypted secrets;
//! every change is seen by the very next request (same instance) and
//! converges across instances (PostgreSQL LISTEN/NOTIFY).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::upstream::FakeUpstream;
use crate::common::{expect, Backend, RequestHelper, TestApp};
use crate::gateway::{create_flow, store_generic_secret};

crate::on_both_backends!(
    whoami_comes_from_the_cached_principal_and_a_rename_shows_at_once,
    a_sign_in_moves_last_login_in_whoami,
    no_run_uses_an_old_secret_after_the_update_returned,
    warm_public_runs_read_nothing_and_a_bound_key_closes_them_at_once,
    the_key_list_counts_pending_uses_without_writing_them,
    a_relayed_answer_keeps_its_length,
);

const SETTINGS: [(&str, &str); 2] = [
    ("KEYGATE_KEY_CACHE_TTL_SECS", "3600"),
    ("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true"),
];

/// Runs `flow` with `key` and returns the secret the upstream was given.
async fn injected(app: &TestApp, upstream: &mut FakeUpstream, flow: &str, key: &str) -> String {
    let res = app
        .as_key(key)
        .post_json(&format!("/api/v1/run/{flow}"), &json!({"inputs": {}}))
        .await;
    expect(res, StatusCode::OK).await;
    let got = upstream.next_request().await;
    got.header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

async fn no_run_uses_an_old_secret_after_the_update_returned(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = TestApp::start_with(backend, &SETTINGS).await;
    let admin = app.admin_token().await;
    store_generic_secret(&app, &admin, "provider-secret-0", None).await;
    let res = app
        .as_session(&admin)
        .post_json(
            "/api/v1/variables/",
            &json!({"name": "PROD_KEY", "value": "variable-secret-0", "type": "Credential"}),
        )
        .await;
    let variable = expect(res, StatusCode::CREATED).await;
    let variable_id = variable["id"].as_str().unwrap().to_string();
    create_flow(&app, &admin, json!({"name": "p", "endpoint_name": "by-provider",
        "upstream": {"url": upstream.url("/p"), "credential": {"provider": "generic", "as": "bearer"}}}))
    .await;
    create_flow(&app, &admin, json!({"name": "v", "endpoint_name": "by-variable",
        "upstream": {"url": upstream.url("/v"), "credential": {"variable": "PROD_KEY", "as": "bearer"}}}))
    .await;
    let (_, key) = app.create_key(&admin, "script").await;

    assert_eq!(
        injected(&app, &mut upstream, "by-provider", &key).await,
        "provider-secret-0"
    );
    assert_eq!(
        injected(&app, &mut upstream, "by-variable", &key).await,
        "variable-secret-0"
    );
    let (flows, secrets) = (
        app.state().flows.database_lookups(),
        app.state().secrets.database_lookups(),
    );
    for _ in 0..10 {
        assert_eq!(
            injected(&app, &mut upstream, "by-provider", &key).await,
            "provider-secret-0"
        );
        assert_eq!(
            injected(&app, &mut upstream, "by-variable", &key).await,
            "variable-secret-0"
        );
    }
    assert_eq!(
        app.state().flows.database_lookups(),
        flows,
        "warm runs read no flow"
    );
    assert_eq!(
        app.state().secrets.database_lookups(),
        secrets,
        "warm runs read no secret"
    );

    for round in 1..=5 {
        let provider_secret = format!("provider-secret-{round}");
        store_generic_secret(&app, &admin, &provider_secret, None).await;
        assert_eq!(
            injected(&app, &mut upstream, "by-provider", &key).await,
            provider_secret
        );
        let variable_secret = format!("variable-secret-{round}");
        let res = app
            .as_session(&admin)
            .patch_json(
                &format!("/api/v1/variables/{variable_id}"),
                &json!({"value": variable_secret}),
            )
            .await;
        expect(res, StatusCode::OK).await;
        assert_eq!(
            injected(&app, &mut upstream, "by-variable", &key).await,
            variable_secret
        );
    }

    // Gone is gone at once: the next run is refused, nothing reaches the upstream.
    let res = app
        .as_session(&admin)
        .delete("/api/v1/providers/generic")
        .await;
    assert!(
        res.status().is_success(),
        "delete credential: {}",
        res.status()
    );
    let res = app
        .as_key(&key)
        .post_json("/api/v1/run/by-provider", &json!({"inputs": {}}))
        .await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    let res = app
        .as_session(&admin)
        .delete(&format!("/api/v1/variables/{variable_id}"))
        .await;
    assert!(
        res.status().is_success(),
        "delete variable: {}",
        res.status()
    );
    let res = app
        .as_key(&key)
        .post_json("/api/v1/run/by-variable", &json!({"inputs": {}}))
        .await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(upstream.received_nothing());
}

async fn run_open(app: &TestApp) -> StatusCode {
    app.anon()
        .post_json("/api/v1/run/open", &json!({"inputs": {}}))
        .await
        .status()
}

async fn warm_public_runs_read_nothing_and_a_bound_key_closes_them_at_once(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = TestApp::start_with(backend, &SETTINGS).await;
    let admin = app.admin_token().await;
    let flow = create_flow(
        &app,
        &admin,
        json!({"name": "open", "endpoint_name": "open",
        "access": "public", "upstream": {"url": upstream.url("/open")}}),
    )
    .await;
    assert_eq!(run_open(&app).await, StatusCode::OK);
    upstream.next_request().await;
    let lookups = app.state().flows.public_database_lookups();
    for _ in 0..10 {
        assert_eq!(run_open(&app).await, StatusCode::OK);
        upstream.next_request().await;
    }
    assert_eq!(app.state().flows.public_database_lookups(), lookups);

    let res = app
        .as_session(&admin)
        .post_json(
            "/api/v1/api_key/",
            &json!({"name": "bound", "flow_id": flow["id"]}),
        )
        .await;
    let bound = expect(res, StatusCode::OK).await;
    assert_eq!(
        run_open(&app).await,
        StatusCode::UNAUTHORIZED,
        "the bound key closes it at once"
    );
    let res = app
        .as_session(&admin)
        .delete(&format!(
            "/api/v1/api_key/{}",
            bound["id"].as_str().unwrap()
        ))
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(
        run_open(&app).await,
        StatusCode::OK,
        "and its deletion opens it at once"
    );
    upstream.next_request().await;
    assert!(upstream.received_nothing());
}

async fn whoami(app: &TestApp, key: &str) -> Value {
    expect(
        app.as_key(key).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await
}

async fn whoami_comes_from_the_cached_principal_and_a_rename_shows_at_once(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_KEY_CACHE_TTL_SECS", "3600")]).await;
    let admin = app.admin_token().await;
    let (ivy_id, ivy) = app.create_user(&admin, "ivy").await;
    let (_, key) = app.create_key(&ivy, "script").await;
    let first = whoami(&app, &key).await;
    assert_eq!(first["username"], "ivy");
    assert_eq!(first["id"], ivy_id.as_str());
    let lookups = app.state().keys.database_lookups();
    for _ in 0..20 {
        assert_eq!(whoami(&app, &key).await, first);
    }
    assert_eq!(
        app.state().keys.database_lookups(),
        lookups,
        "warm whoami reads nothing from the database"
    );

    for (round, name) in ["ivy2", "ivy3", "ivy4"].iter().enumerate() {
        let res = app
            .as_session(&admin)
            .patch_json(
                &format!("/api/v1/users/{ivy_id}"),
                &json!({"username": name, "is_superuser": round == 1}),
            )
            .await;
        let updated = expect(res, StatusCode::OK).await;
        let seen = whoami(&app, &key).await;
        assert_eq!(seen["username"], *name, "the next request sees the rename");
        assert_eq!(seen["is_superuser"], round == 1);
        assert_eq!(seen["updated_at"], updated["updated_at"]);
    }
}

async fn a_sign_in_moves_last_login_in_whoami(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_KEY_CACHE_TTL_SECS", "3600")]).await;
    let admin = app.admin_token().await;
    let (_, key) = app.create_key(&admin, "script").await;
    let before = whoami(&app, &key).await["last_login_at"].clone();
    assert!(before.is_string(), "the admin signed in: {before}");
    let session = app
        .as_session(&app.admin_token().await)
        .get("/api/v1/session")
        .await;
    let session = expect(session, StatusCode::OK).await;
    let after = whoami(&app, &key).await;
    assert_eq!(after["last_login_at"], session["user"]["last_login_at"]);
    assert_eq!(
        after, session["user"],
        "a key and a session describe one user"
    );
}

/// Asks `instance` for `whoami` until `check` holds, for at most 5 s (the
/// cache TTL in these tests is an hour: only a notification can do it).
async fn converges(instance: &TestApp, key: &str, check: impl Fn(&Value) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check(&whoami(instance, key).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[actix_web::test]
async fn a_rename_on_one_instance_reaches_the_cached_principal_on_the_other() {
    let settings = [("KEYGATE_KEY_CACHE_TTL_SECS", "3600")];
    let first = TestApp::start_with(Backend::Postgres, &settings).await;
    let second = TestApp::start_on(first.db.alias(), &settings).await;
    let admin = first.admin_token().await;
    let (ivy_id, ivy) = first.create_user(&admin, "ivy").await;
    let (_, key) = first.create_key(&ivy, "script").await;
    assert_eq!(whoami(&second, &key).await["username"], "ivy");
    let res = first
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/users/{ivy_id}"),
            &json!({"username": "ivy-renamed"}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(whoami(&first, &key).await["username"], "ivy-renamed");
    assert!(converges(&second, &key, |me| me["username"] == "ivy-renamed").await);
}

#[actix_web::test]
async fn a_secret_update_on_one_instance_reaches_the_runs_of_the_other() {
    let mut upstream = FakeUpstream::start();
    let first = TestApp::start_with(Backend::Postgres, &SETTINGS).await;
    let second = TestApp::start_on(first.db.alias(), &SETTINGS).await;
    let admin = first.admin_token().await;
    store_generic_secret(&first, &admin, "before-0123456789", None).await;
    create_flow(&first, &admin, json!({"name": "p", "endpoint_name": "p",
        "upstream": {"url": upstream.url("/p"), "credential": {"provider": "generic", "as": "bearer"}}}))
    .await;
    let (_, key) = first.create_key(&admin, "script").await;
    assert_eq!(
        injected(&second, &mut upstream, "p", &key).await,
        "before-0123456789"
    );
    store_generic_secret(&first, &admin, "after-0123456789", None).await;
    assert_eq!(
        injected(&first, &mut upstream, "p", &key).await,
        "after-0123456789"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = String::new();
    while Instant::now() < deadline && seen != "after-0123456789" {
        seen = injected(&second, &mut upstream, "p", &key).await;
    }
    assert_eq!(seen, "after-0123456789", "the second instance converges");
}

async fn the_key_list_counts_pending_uses_without_writing_them(backend: Backend) {
    // Usage is written once an hour here: only the list's own overlay can
    // show the uses.
    let app = TestApp::start_with(backend, &[("KEYGATE_USAGE_FLUSH_MS", "3600000")]).await;
    let admin = app.admin_token().await;
    let (key_id, key) = app.create_key(&admin, "script").await;
    for _ in 0..3 {
        whoami(&app, &key).await;
    }
    let list = expect(
        app.as_key(&key).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let listed = list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["total_uses"], 4, "three whoami and the list itself");
    assert!(listed["last_used_at"].is_string());
    assert_eq!(
        app.state().usage.pending_keys(),
        1,
        "the list wrote nothing"
    );
}

/// Sends `whoami` with `key` to `instance` until `stop` is set; returns
/// (when each request was sent, its status).
async fn hammer(
    instance: &TestApp,
    key: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(Instant, StatusCode)> {
    let mut seen = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let sent = Instant::now();
        seen.push((sent, instance.whoami_status(key).await));
    }
    seen
}

#[actix_web::test]
async fn revocation_and_deactivation_are_final_on_every_instance_when_the_api_answers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // The hammer sends hundreds of refused keys: no per-address limit here,
    // so every refusal is the revocation's 401.
    let settings = [
        ("KEYGATE_KEY_CACHE_TTL_SECS", "3600"),
        ("KEYGATE_KEY_FAILURES_PER_MINUTE", "0"),
    ];
    let first = TestApp::start_with(Backend::Postgres, &settings).await;
    let second = TestApp::start_on(first.db.alias(), &settings).await;
    let admin = first.admin_token().await;
    for round in 0..3 {
        let (key_id, key) = first.create_key(&admin, "doomed").await;
        assert_eq!(
            second.whoami_status(&key).await,
            StatusCode::OK,
            "cached on the second"
        );
        let stop = AtomicBool::new(false);
        let revoke = async {
            // Let the hammer run against the cached key first.
            while second.state().keys.cached_keys() == 0 {
                tokio::task::yield_now().await;
            }
            let res = first
                .as_session(&admin)
                .delete(&format!("/api/v1/api_key/{key_id}"))
                .await;
            expect(res, StatusCode::OK).await;
            let returned = Instant::now();
            // Keep hammering a little after the DELETE returned.
            for _ in 0..20 {
                assert_eq!(second.whoami_status(&key).await, StatusCode::UNAUTHORIZED);
            }
            stop.store(true, Ordering::SeqCst);
            returned
        };
        let (seen, returned) = tokio::join!(hammer(&second, &key, &stop), revoke);
        let accepted_after: Vec<_> = seen
            .iter()
            .filter(|(sent, status)| *sent > returned && *status == StatusCode::OK)
            .collect();
        assert!(
            accepted_after.is_empty(),
            "round {round}: {accepted_after:?}"
        );
    }

    // Deactivating a user is final everywhere when the PATCH returns too.
    let (ivy_id, ivy) = first.create_user(&admin, "ivy").await;
    let (_, ivy_key) = first.create_key(&ivy, "ivy").await;
    assert_eq!(second.whoami_status(&ivy_key).await, StatusCode::OK);
    let res = first
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/users/{ivy_id}"),
            &json!({"is_active": false}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(
        second.whoami_status(&ivy_key).await,
        StatusCode::UNAUTHORIZED
    );
}

/// An upstream answer of announced length is relayed with that length (not
/// re-chunked), byte for byte.
async fn a_relayed_answer_keeps_its_length(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = TestApp::start_with(backend, &SETTINGS).await;
    let admin = app.admin_token().await;
    let (_, key) = app.create_key(&admin, "script").await;
    create_flow(
        &app,
        &admin,
        json!({"name": "sized", "endpoint_name": "sized",
        "upstream": {"url": upstream.url("/sized")}}),
    )
    .await;
    let res = app
        .as_key(&key)
        .post_json("/api/v1/run/sized", &json!({"inputs": {}}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let length = res
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(res.headers().get("transfer-encoding").is_none());
    let body = res.bytes().await.unwrap();
    assert!(!body.is_empty());
    assert_eq!(length, Some(body.len().to_string()));
    upstream.next_request().await;
}
