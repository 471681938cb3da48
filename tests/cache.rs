//! The key verification cache: no database work for cached keys, bounded
//! misses, and revocation across instances (PostgreSQL LISTEN/NOTIFY).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{expect, Backend, RequestHelper, TestApp};

crate::on_both_backends!(
    cached_keys_skip_the_database_and_revocation_is_immediate,
    unknown_keys_cannot_push_valid_keys_out,
);

async fn cached_keys_skip_the_database_and_revocation_is_immediate(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_KEY_CACHE_TTL_SECS", "3600")]).await;
    let admin = app.admin_token().await;
    let (key_id, key) = app.create_key(&admin, "hot").await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    let lookups = app.state().keys.database_lookups();
    for _ in 0..20 {
        assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    }
    assert_eq!(
        app.state().keys.database_lookups(),
        lookups,
        "cached keys need no lookup"
    );

    // Deactivation and revocation reach the cache before the API answers.
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{key_id}"),
            &json!({"is_active": false}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::UNAUTHORIZED);
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{key_id}"),
            &json!({"is_active": true}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    let res = app
        .as_session(&admin)
        .delete(&format!("/api/v1/api_key/{key_id}"))
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::UNAUTHORIZED);
}

async fn unknown_keys_cannot_push_valid_keys_out(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        &[
            ("KEYGATE_KEY_CACHE_SIZE", "2"),
            ("KEYGATE_KEY_CACHE_TTL_SECS", "3600"),
        ],
    )
    .await;
    let admin = app.admin_token().await;
    let (_, first) = app.create_key(&admin, "a").await;
    let (_, second) = app.create_key(&admin, "b").await;
    assert_eq!(app.whoami_status(&first).await, StatusCode::OK);
    assert_eq!(app.whoami_status(&second).await, StatusCode::OK);
    assert_eq!(app.state().keys.cached_keys(), 2);

    let flood: Vec<String> = (0..40)
        .map(|_| {
            keygate::keys::token::PlainKey::generate()
                .unwrap()
                .into_string()
        })
        .collect();
    for unknown in &flood {
        assert_eq!(app.whoami_status(unknown).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        app.state().keys.cached_keys(),
        2,
        "unknown keys are not cached as keys"
    );
    let lookups = app.state().keys.database_lookups();
    assert_eq!(app.whoami_status(&first).await, StatusCode::OK);
    assert_eq!(app.whoami_status(&second).await, StatusCode::OK);
    assert_eq!(
        app.state().keys.database_lookups(),
        lookups,
        "valid keys stayed cached"
    );
    // A repeated unknown key is answered from the short negative cache.
    assert_eq!(
        app.whoami_status(&flood[39]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.state().keys.database_lookups(), lookups);
    // Malformed keys never reach the database.
    assert_eq!(
        app.whoami_status("sk-short").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.state().keys.database_lookups(), lookups);
}

/// Asks `instance` until the key is refused, for at most `limit`. The
/// cache TTL in these tests is an hour, so a refusal within the limit can
/// only come from the notification.
async fn refused_within(instance: &TestApp, key: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if instance.whoami_status(key).await == StatusCode::UNAUTHORIZED {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[actix_web::test]
async fn a_revocation_on_one_instance_reaches_the_other() {
    let settings = [("KEYGATE_KEY_CACHE_TTL_SECS", "3600")];
    let first = TestApp::start_with(Backend::Postgres, &settings).await;
    let second = TestApp::start_on(first.db.alias(), &settings).await;
    let admin = first.admin_token().await;
    let (key_id, key) = first.create_key(&admin, "shared").await;
    let (ivy_id, ivy) = first.create_user(&admin, "ivy").await;
    let (_, ivy_key) = first.create_key(&ivy, "ivy").await;
    for instance in [&first, &second] {
        assert_eq!(instance.whoami_status(&key).await, StatusCode::OK);
        assert_eq!(instance.whoami_status(&ivy_key).await, StatusCode::OK);
    }
    let lookups = second.state().keys.database_lookups();
    assert_eq!(second.whoami_status(&key).await, StatusCode::OK);
    assert_eq!(
        second.state().keys.database_lookups(),
        lookups,
        "the second instance has it cached"
    );

    let res = first
        .as_session(&admin)
        .delete(&format!("/api/v1/api_key/{key_id}"))
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(first.whoami_status(&key).await, StatusCode::UNAUTHORIZED);
    assert!(refused_within(&second, &key, Duration::from_secs(5)).await);

    // Deactivating the owner on the first instance reaches the second too.
    let res = first
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/users/{ivy_id}"),
            &json!({"is_active": false}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert!(refused_within(&second, &ivy_key, Duration::from_secs(5)).await);
}

#[actix_web::test]
async fn a_flow_change_on_one_instance_reaches_the_other() {
    use crate::common::upstream::FakeUpstream;
    let mut upstream = FakeUpstream::start();
    let settings = [
        ("KEYGATE_KEY_CACHE_TTL_SECS", "3600"),
        ("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true"),
    ];
    let first = TestApp::start_with(Backend::Postgres, &settings).await;
    let second = TestApp::start_on(first.db.alias(), &settings).await;
    let admin = first.admin_token().await;
    let (_, key) = first.create_key(&admin, "runner").await;
    let res = first
        .as_session(&admin)
        .post_json(
            "/api/v1/flows/",
            &json!({"name": "f", "endpoint_name": "moving", "upstream": {"url": upstream.url("/before")}}),
        )
        .await;
    let flow = expect(res, StatusCode::CREATED).await;
    let runs_on_second = second.as_key(&key);
    let run = "/api/v1/run/moving";
    let inputs = json!({"inputs": {}});
    // The second instance caches the flow.
    expect(runs_on_second.post_json(run, &inputs).await, StatusCode::OK).await;
    assert_eq!(upstream.next_request().await.path, "/before");

    let res = first
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/flows/{}", flow["id"].as_str().unwrap()),
            &json!({"upstream": {"url": upstream.url("/after")}}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    // Within the notification's reach (the TTL is an hour), the second
    // instance sends runs to the new upstream.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        expect(runs_on_second.post_json(run, &inputs).await, StatusCode::OK).await;
        if upstream.next_request().await.path == "/after" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flow change never reached the second instance"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
