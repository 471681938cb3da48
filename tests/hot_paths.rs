//! What a verified caller does next is served from memory: `whoami` from
//! the cached principal, a run from cached flows and decrypted secrets;
//! every change is seen by the very next request (same instance) and
//! converges across instances (PostgreSQL LISTEN/NOTIFY).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp};

crate::on_both_backends!(
    whoami_comes_from_the_cached_principal_and_a_rename_shows_at_once,
    a_sign_in_moves_last_login_in_whoami,
);

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
