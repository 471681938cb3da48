//! Key lifecycle: scopes, rotation with overlap, address allow-lists and
//! the machine-readable reasons refusals carry (`X-Keygate-Reason`).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp};

crate::on_both_backends!(
    scopes_confine_a_key,
    scopes_cannot_be_escalated,
    scopes_are_validated_and_patched,
    rotation_overlaps_then_the_old_key_is_invalid,
    rotation_with_no_grace_stops_the_old_key_now,
    allowed_ips_confine_a_key_to_its_addresses,
    an_invalid_key_gets_no_reason,
    a_leaked_key_report_revokes_without_credentials,
);

const REASON: &str = "x-keygate-reason";

/// Creates a key with the session `token` and `body`; (id, key, answer).
async fn key_with(app: &TestApp, token: &str, body: Value) -> (String, String, Value) {
    let res = app
        .as_session(token)
        .post_json("/api/v1/api_key/", &body)
        .await;
    let created = expect(res, StatusCode::OK).await;
    (
        created["id"].as_str().unwrap().to_string(),
        created["api_key"].as_str().unwrap().to_string(),
        created,
    )
}

/// Asserts a 403 naming `scope`, with the reason header.
async fn assert_lacks(res: reqwest::Response, scope: &str) {
    assert_eq!(res.headers()[REASON], "MISSING_SCOPE");
    let body = expect(res, StatusCode::FORBIDDEN).await;
    assert_eq!(
        body["detail"],
        format!("This API key lacks the '{scope}' scope")
    );
}

async fn scopes_confine_a_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, full, created) = key_with(&app, &admin, json!({"name": "all"})).await;
    assert_eq!(created["scopes"], json!(["read", "write", "run", "admin"]));
    let (_, read, created) = key_with(&app, &admin, json!({"scopes": ["read"]})).await;
    assert_eq!(created["scopes"], json!(["read"]));

    // read: GET routes; not writes, runs or superuser routes.
    expect(
        app.as_key(&read).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    assert_lacks(
        app.as_key(&read)
            .post_json("/api/v1/api_key/", &json!({}))
            .await,
        "write",
    )
    .await;
    assert_lacks(
        app.as_key(&read)
            .post_json("/api/v1/run/anything", &json!({}))
            .await,
        "run",
    )
    .await;
    assert_lacks(app.as_key(&read).get("/api/v1/users/").await, "admin").await;
    // The key with every scope reaches all of them.
    expect(
        app.as_key(&full).get("/api/v1/users/").await,
        StatusCode::OK,
    )
    .await;

    // The list shows each key's scopes.
    let list = expect(
        app.as_key(&full).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let scopes: Vec<&Value> = list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["scopes"])
        .collect();
    assert_eq!(
        scopes,
        [&json!(["read", "write", "run", "admin"]), &json!(["read"])]
    );

    // A run-only key runs (here: an unknown flow, 404) but reads nothing.
    let (_, run, _) = key_with(&app, &admin, json!({"scopes": ["run"]})).await;
    let res = app
        .as_key(&run)
        .post_json("/api/v1/run/no-such-flow", &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_lacks(app.as_key(&run).get("/api/v1/users/whoami").await, "read").await;
    // Checking the key itself needs no scope.
    expect(
        app.as_key(&run).get("/api/v1/auth/check").await,
        StatusCode::OK,
    )
    .await;
}

async fn scopes_cannot_be_escalated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, writer, _) = key_with(&app, &admin, json!({"scopes": ["read", "write"]})).await;
    let as_writer = app.as_key(&writer);
    // Omitted scopes are all four: more than the writer has.
    let res = as_writer.post_json("/api/v1/api_key/", &json!({})).await;
    let body = expect(res, StatusCode::FORBIDDEN).await;
    assert_eq!(
        body["detail"],
        "An API key cannot give a key scopes it lacks itself"
    );
    let res = as_writer
        .post_json("/api/v1/api_key/", &json!({"scopes": ["read", "run"]}))
        .await;
    expect(res, StatusCode::FORBIDDEN).await;
    // Within its own scopes it may create keys.
    let res = as_writer
        .post_json("/api/v1/api_key/", &json!({"scopes": ["read"]}))
        .await;
    let narrow = expect(res, StatusCode::OK).await;
    let narrow_id = narrow["id"].as_str().unwrap();
    // Nor widen a key, nor rotate a wider one.
    let res = as_writer
        .patch_json(
            &format!("/api/v1/api_key/{narrow_id}"),
            &json!({"scopes": ["read", "write", "run"]}),
        )
        .await;
    expect(res, StatusCode::FORBIDDEN).await;
    let res = as_writer
        .patch_json(
            &format!("/api/v1/api_key/{narrow_id}"),
            &json!({"scopes": null}),
        )
        .await;
    expect(res, StatusCode::FORBIDDEN).await;
    let (wide_id, _, _) = key_with(&app, &admin, json!({})).await;
    let res = as_writer
        .post_json(&format!("/api/v1/api_key/{wide_id}/rotate"), &json!({}))
        .await;
    expect(res, StatusCode::FORBIDDEN).await;
    // A session may widen.
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{narrow_id}"),
            &json!({"scopes": ["read", "write", "run"]}),
        )
        .await;
    let patched = expect(res, StatusCode::OK).await;
    assert_eq!(patched["scopes"], json!(["read", "write", "run"]));
}

async fn scopes_are_validated_and_patched(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let session = app.as_session(&admin);
    for (body, status) in [
        (
            json!({"scopes": ["read", "delete"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"scopes": []}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"scopes": "read"}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let res = session.post_json("/api/v1/api_key/", &body).await;
        let answer = expect(res, status).await;
        assert!(answer["detail"].is_string(), "{answer}");
    }
    // admin only for a superuser's key.
    let (_, ivy) = app.create_user(&admin, "ivy").await;
    let res = app
        .as_session(&ivy)
        .post_json("/api/v1/api_key/", &json!({"scopes": ["admin"]}))
        .await;
    let body = expect(res, StatusCode::FORBIDDEN).await;
    assert_eq!(
        body["detail"],
        "Only a superuser's key can have the 'admin' scope"
    );
    let listed = expect(
        app.as_session(&ivy).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["total_count"], 0, "nothing was created");

    // PATCH narrows a live key at once (the cached key follows).
    let (id, key, _) = key_with(&app, &admin, json!({})).await;
    expect(app.as_key(&key).get("/api/v1/users/").await, StatusCode::OK).await;
    let res = session
        .patch_json(
            &format!("/api/v1/api_key/{id}"),
            &json!({"scopes": ["read"]}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_lacks(app.as_key(&key).get("/api/v1/users/").await, "admin").await;
    // null gives every scope back.
    let res = session
        .patch_json(&format!("/api/v1/api_key/{id}"), &json!({"scopes": null}))
        .await;
    let body = expect(res, StatusCode::OK).await;
    assert_eq!(body["scopes"], json!(["read", "write", "run", "admin"]));
    expect(app.as_key(&key).get("/api/v1/users/").await, StatusCode::OK).await;
}

async fn rotate(app: &TestApp, token: &str, id: &str, body: Value) -> Value {
    let res = app
        .as_session(token)
        .post_json(&format!("/api/v1/api_key/{id}/rotate"), &body)
        .await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    expect(res, StatusCode::OK).await
}

async fn rotation_overlaps_then_the_old_key_is_invalid(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (old_id, old, _) = key_with(
        &app,
        &admin,
        json!({"name": "ci", "scopes": ["read", "run"], "expires_at": "2099-01-01T00:00:00Z"}),
    )
    .await;
    let before = chrono::Utc::now();
    let rotated = rotate(&app, &admin, &old_id, json!({"grace_seconds": 3600})).await;
    let new = rotated["api_key"].as_str().unwrap();
    assert_ne!(new, old);
    assert_ne!(rotated["id"], old_id.as_str());
    assert_eq!(rotated["old_key_id"], old_id.as_str());
    assert_eq!(rotated["name"], "ci");
    assert_eq!(rotated["scopes"], json!(["read", "run"]));
    assert_eq!(rotated["expires_at"], "2099-01-01T00:00:00Z");
    let old_until: chrono::DateTime<chrono::Utc> = rotated["old_key_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = old_until - before;
    assert!(grace <= chrono::Duration::seconds(3601) && grace > chrono::Duration::seconds(3500));
    // Both work during the overlap; the list shows the old key's new expiry.
    for key in [old.as_str(), new] {
        expect(
            app.as_key(key).get("/api/v1/api_key/").await,
            StatusCode::OK,
        )
        .await;
    }
    let list = expect(
        app.as_session(&admin).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let old_row = list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == old_id.as_str())
        .unwrap();
    assert_eq!(old_row["expires_at"], rotated["old_key_expires_at"]);
    // The new key is shown once: the list masks it.
    assert!(!list.to_string().contains(new));

    // The default grace is a day; the bound is 30 days.
    let (id, _, _) = key_with(&app, &admin, json!({})).await;
    let rotated = rotate(&app, &admin, &id, json!({})).await;
    let until: chrono::DateTime<chrono::Utc> = rotated["old_key_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(until - chrono::Utc::now() > chrono::Duration::hours(23));
    for grace in [json!(-1), json!(2_592_001), json!("soon")] {
        let res = app
            .as_session(&admin)
            .post_json(
                &format!("/api/v1/api_key/{id}/rotate"),
                &json!({"grace_seconds": grace}),
            )
            .await;
        expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // Another user's key is a 404.
    let (_, ivy) = app.create_user(&admin, "ivy").await;
    let res = app
        .as_session(&ivy)
        .post_json(&format!("/api/v1/api_key/{id}/rotate"), &json!({}))
        .await;
    expect(res, StatusCode::NOT_FOUND).await;
}

async fn rotation_with_no_grace_stops_the_old_key_now(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (id, old, _) = key_with(&app, &admin, json!({"name": "leaky"})).await;
    // Cached before the rotation.
    expect(
        app.as_key(&old).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let rotated = rotate(&app, &admin, &id, json!({"grace_seconds": 0})).await;
    let new = rotated["api_key"].as_str().unwrap();
    let res = app.as_key(&old).get("/api/v1/api_key/").await;
    assert!(res.headers().get(REASON).is_none());
    let body = expect(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body, json!({"detail": "Invalid API key"}));
    expect(
        app.as_key(new).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    // An expired key cannot be rotated back to life.
    let res = app
        .as_session(&admin)
        .post_json(&format!("/api/v1/api_key/{id}/rotate"), &json!({}))
        .await;
    expect(res, StatusCode::CONFLICT).await;
}

/// A request that arrives through the trusted proxy on loopback for the
/// client `from` (an address in a header, no traffic to it).
async fn from(app: &TestApp, key: &str, from: &str) -> reqwest::Response {
    app.as_key(key)
        .request(reqwest::Method::GET, "/api/v1/api_key/")
        .header("x-forwarded-for", from)
        .send()
        .await
        .unwrap()
}

async fn allowed_ips_confine_a_key_to_its_addresses(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_TRUSTED_PROXIES", "127.0.0.0/8")]).await;
    let admin = app.admin_token().await;
    let (id, key, created) = key_with(
        &app,
        &admin,
        json!({"allowed_ips": ["203.0.113.0/24", "2001:db8::/32"]}),
    )
    .await;
    assert_eq!(
        created["allowed_ips"],
        json!(["203.0.113.0/24", "2001:db8::/32"])
    );
    for allowed in ["203.0.113.9", "2001:db8:1::5"] {
        expect(from(&app, &key, allowed).await, StatusCode::OK).await;
    }
    for refused in ["198.51.100.1", "2001:db9::1", "127.0.0.1"] {
        let res = from(&app, &key, refused).await;
        assert_eq!(res.headers()[REASON], "FORBIDDEN_ADDRESS");
        let body = expect(res, StatusCode::FORBIDDEN).await;
        assert_eq!(
            body["detail"],
            "This API key is not allowed from this address"
        );
    }
    // Bad lists are refused whole.
    for bad in [json!(["203.0.113.0/33"]), json!(["example.org"]), json!([])] {
        let res = app
            .as_session(&admin)
            .post_json("/api/v1/api_key/", &json!({"allowed_ips": bad}))
            .await;
        expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // A confined key cannot mint a key for other addresses.
    let res = app
        .as_key(&key)
        .request(reqwest::Method::POST, "/api/v1/api_key/")
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"allowed_ips": ["198.51.100.0/24"]}))
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::FORBIDDEN).await;
    let res = app
        .as_key(&key)
        .request(reqwest::Method::POST, "/api/v1/api_key/")
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"allowed_ips": ["203.0.113.128/25"]}))
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    // PATCH null: any address again, at once.
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{id}"),
            &json!({"allowed_ips": null}),
        )
        .await;
    let body = expect(res, StatusCode::OK).await;
    assert_eq!(body["allowed_ips"], Value::Null);
    expect(from(&app, &key, "198.51.100.1").await, StatusCode::OK).await;
}

async fn an_invalid_key_gets_no_reason(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (revoked_id, revoked, _) = key_with(&app, &admin, json!({})).await;
    let res = app
        .as_session(&admin)
        .delete(&format!("/api/v1/api_key/{revoked_id}"))
        .await;
    expect(res, StatusCode::OK).await;
    let (inactive_id, inactive, _) = key_with(&app, &admin, json!({})).await;
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{inactive_id}"),
            &json!({"is_active": false}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    let unknown = format!("sk-{}", "a".repeat(revoked.len() - 3));
    let mut answers = Vec::new();
    for key in [revoked.as_str(), inactive.as_str(), unknown.as_str()] {
        let res = app.as_key(key).get("/api/v1/api_key/").await;
        assert!(res.headers().get(REASON).is_none());
        let status = res.status();
        answers.push((status, res.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
}

/// Rotation across instances: the old key, cached on the other instance,
/// is refused there as soon as the rotation with no grace has answered
/// (the bus acknowledges changes that take something away).
#[actix_web::test]
async fn a_rotation_on_one_instance_stops_the_old_key_on_the_other() {
    let settings = [("KEYGATE_KEY_CACHE_TTL_SECS", "3600")];
    let first = TestApp::start_with(Backend::Postgres, &settings).await;
    let second = TestApp::start_on(first.db.alias(), &settings).await;
    let admin = first.admin_token().await;
    let (id, old, _) = key_with(&first, &admin, json!({"scopes": ["read"]})).await;
    expect(
        second.as_key(&old).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let rotated = rotate(&first, &admin, &id, json!({"grace_seconds": 0})).await;
    expect(
        second.as_key(&old).get("/api/v1/api_key/").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let new = rotated["api_key"].as_str().unwrap();
    expect(
        second.as_key(new).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    // The scopes came along, on the other instance too.
    assert_lacks(
        second
            .as_key(new)
            .post_json("/api/v1/api_key/", &json!({}))
            .await,
        "write",
    )
    .await;
}

async fn report(app: &TestApp, keys: Value) -> reqwest::Response {
    app.anon()
        .post_json("/api/v1/api_key/revoke-leaked", &json!({"keys": keys}))
        .await
}

async fn a_leaked_key_report_revokes_without_credentials(backend: Backend) {
    // Reports and invalid keys share the address's budget of 4 a minute.
    let app = TestApp::start_with(backend, &[("KEYGATE_KEY_FAILURES_PER_MINUTE", "4")]).await;
    let admin = app.admin_token().await;
    let (leaked_id, leaked, _) = key_with(&app, &admin, json!({})).await;
    let (_, kept, _) = key_with(&app, &admin, json!({})).await;
    expect(
        app.as_key(&leaked).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    // A stored key and junk get the same answer.
    let unknown = format!("sk-{}", "b".repeat(leaked.len() - 3));
    let revoked = expect(
        report(&app, json!([leaked, "not a key", unknown])).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let nothing = expect(report(&app, json!([unknown])).await, StatusCode::ACCEPTED).await;
    assert_eq!(revoked, nothing);
    // The reported key is gone (the cached one too); the other one stays.
    expect(
        app.as_key(&leaked).get("/api/v1/api_key/").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let list = expect(
        app.as_key(&kept).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["total_count"], 1);
    assert_ne!(list["api_keys"][0]["id"], leaked_id.as_str());
    // At most 100 keys; bad bodies are 422.
    let many: Vec<String> = (0..101).map(|_| unknown.clone()).collect();
    expect(
        report(&app, json!(many)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let res = app
        .anon()
        .post_json("/api/v1/api_key/revoke-leaked", &json!({"key": leaked}))
        .await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    // Throttled per address: two reports and the refused key counted
    // three; one more report reaches the budget, the next is refused and
    // revokes nothing.
    expect(report(&app, json!([])).await, StatusCode::ACCEPTED).await;
    let res = report(&app, json!([kept])).await;
    assert!(res.headers().contains_key("retry-after"));
    expect(res, StatusCode::TOO_MANY_REQUESTS).await;
    expect(
        app.as_session(&admin).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let list = expect(
        app.as_session(&admin).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        list["total_count"], 1,
        "the throttled report revoked nothing"
    );
}
