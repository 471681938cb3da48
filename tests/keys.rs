//! API keys and the x-api-key middleware, on both backends.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp};

crate::on_both_backends!(
    create_list_and_use_a_key,
    header_and_query_parameter_both_work,
    missing_malformed_and_ambiguous_keys_are_refused,
    revoked_inactive_expired_and_unknown_keys_get_one_answer,
    other_users_keys_are_not_found,
    a_key_has_exactly_its_owners_privileges,
    usage_counters_are_batched_and_exact,
    no_plaintext_key_is_stored,
    bad_key_input_gets_clear_errors,
);

async fn create_list_and_use_a_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let admin = app.as_session(&token);
    let res = admin
        .post_json("/api/v1/api_key/", &json!({"name": "ci"}))
        .await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let created = expect(res, StatusCode::OK).await;
    let key = created["api_key"].as_str().unwrap();
    assert_eq!(key.len(), 46);
    assert!(key.starts_with("sk-"));
    assert!(key[3..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    for field in [
        "id",
        "name",
        "user_id",
        "created_at",
        "is_active",
        "expires_at",
    ] {
        assert!(created.get(field).is_some(), "missing {field} in {created}");
    }
    assert_eq!(created["name"], "ci");
    assert_eq!(created["is_active"], true);
    assert_eq!(created["expires_at"], Value::Null);

    // `{}` and an empty body create unnamed keys, as in Langflow.
    let unnamed = admin.post_json("/api/v1/api_key/", &json!({})).await;
    assert_eq!(expect(unnamed, StatusCode::OK).await["name"], Value::Null);

    let list = expect(admin.get("/api/v1/api_key/").await, StatusCode::OK).await;
    assert_eq!(list["total_count"], 2);
    assert_eq!(list["user_id"], created["user_id"]);
    let listed = &list["api_keys"][0];
    assert_eq!(listed["id"], created["id"]);
    let masked = listed["api_key"].as_str().unwrap();
    assert_eq!(masked.len(), 46);
    assert_eq!(&masked[..8], &key[..8]);
    assert!(masked[8..].chars().all(|c| c == '*'));
    assert!(
        !list.to_string().contains(key),
        "a list must never show a full key"
    );
    for field in [
        "last_used_at",
        "total_uses",
        "is_active",
        "expires_at",
        "created_at",
        "user_id",
        "name",
    ] {
        assert!(listed.get(field).is_some(), "missing {field}");
    }

    let (status, me) = app.get_with_key("/api/v1/users/whoami", key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "admin");
    assert!(me.get("create_at").is_some());
}

async fn header_and_query_parameter_both_work(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let (_, key) = app.create_key(&token, "k").await;
    let by_header = app
        .anon()
        .request(Method::GET, "/api/v1/users/whoami")
        .header("X-API-KEY", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_header.status(),
        StatusCode::OK,
        "header name is case-insensitive"
    );
    let by_query = app.as_key_in_query(&key).get("/api/v1/users/whoami").await;
    assert_eq!(by_query.status(), StatusCode::OK);
    let same_in_both = app
        .as_key(&key)
        .request(Method::GET, "/api/v1/users/whoami")
        .query(&[("x-api-key", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(same_in_both.status(), StatusCode::OK);
    // A key can create another key, as in Langflow.
    let res = app
        .as_key_in_query(&key)
        .post_json("/api/v1/api_key/", &json!({"name": "child"}))
        .await;
    let child = expect(res, StatusCode::OK).await;
    assert_eq!(
        app.whoami_status(child["api_key"].as_str().unwrap()).await,
        StatusCode::OK
    );
}

async fn missing_malformed_and_ambiguous_keys_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let (_, key) = app.create_key(&token, "k").await;
    let (_, other_key) = app.create_key(&token, "k2").await;

    let missing = app.anon().get("/api/v1/api_key/").await;
    let body = expect(missing, StatusCode::UNAUTHORIZED).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("x-api-key header") && detail.contains("query parameter"),
        "{detail}"
    );

    let conflict = app
        .as_key(&key)
        .request(Method::GET, "/api/v1/users/whoami")
        .query(&[("x-api-key", other_key.as_str())])
        .send()
        .await
        .unwrap();
    expect(conflict, StatusCode::BAD_REQUEST).await;

    let twice = app
        .as_key(&key)
        .request(Method::GET, "/api/v1/users/whoami")
        .header("x-api-key", &other_key)
        .send()
        .await
        .unwrap();
    expect(twice, StatusCode::BAD_REQUEST).await;

    let invalid = json!({"detail": "Invalid API key"});
    for bad in [
        "not-a-key".to_string(),
        format!("pk-{}", &key[3..]),
        key[..45].to_string(),
        format!("{key}A"),
        format!("sk-{}", "!".repeat(43)),
        "sk-".to_string() + &"A".repeat(5000),
    ] {
        let (status, body) = app.get_with_key("/api/v1/users/whoami", &bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(body, invalid);
    }
    // Credentials are checked before the body is read: a bad key with a
    // broken body is a 401, not a 422.
    let bad_key_bad_body = app
        .as_key("sk-wrong")
        .request(Method::POST, "/api/v1/api_key/")
        .header("content-type", "application/json")
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect(bad_key_bad_body, StatusCode::UNAUTHORIZED).await,
        invalid
    );

    // API keys do not go in Authorization (Langflow refuses it too).
    let bearer_key = app.as_session(&key).get("/api/v1/users/whoami").await;
    expect(bearer_key, StatusCode::UNAUTHORIZED).await;
}

async fn revoked_inactive_expired_and_unknown_keys_get_one_answer(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let (_, unknown_owner_token) = app.create_user(&token, "carol").await;
    let (revoked_id, revoked) = app.create_key(&token, "revoked").await;
    let (inactive_id, inactive) = app.create_key(&token, "inactive").await;
    let (expired_id, expired) = app.create_key(&token, "expired").await;
    let (_, owner_inactive) = app.create_key(&unknown_owner_token, "carols").await;
    // (The expired key is not used first: a key's expiry is fixed at
    // creation, and the test moves it behind the server's back.)
    for key in [&revoked, &inactive, &owner_inactive] {
        assert_eq!(app.whoami_status(key).await, StatusCode::OK);
    }

    // Revocation is effective before the DELETE response is sent.
    let admin = app.as_session(&token);
    let res = admin.delete(&format!("/api/v1/api_key/{revoked_id}")).await;
    assert_eq!(
        expect(res, StatusCode::OK).await,
        json!({"detail": "API Key deleted"})
    );

    let res = admin
        .patch_json(
            &format!("/api/v1/api_key/{inactive_id}"),
            &json!({"is_active": false}),
        )
        .await;
    assert_eq!(expect(res, StatusCode::OK).await["is_active"], false);

    // Expiry passes in the database (no waiting in tests).
    {
        use diesel::prelude::*;
        use keygate::db::schema::api_keys;
        let mut conn = app.db.connect();
        diesel::update(api_keys::table.find(&expired_id))
            .set(
                api_keys::expires_at
                    .eq(chrono::Utc::now().naive_utc() - chrono::Duration::minutes(1)),
            )
            .execute(&mut conn)
            .unwrap();
    }

    let users = expect(admin.get("/api/v1/users/").await, StatusCode::OK).await;
    let carol = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "carol")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = admin
        .patch_json(
            &format!("/api/v1/users/{carol}"),
            &json!({"is_active": false}),
        )
        .await;
    expect(res, StatusCode::OK).await;

    let unknown = keygate::keys::token::PlainKey::generate()
        .unwrap()
        .into_string();
    let mut bodies = Vec::new();
    for key in [&revoked, &inactive, &expired, &owner_inactive, &unknown] {
        let (status, body) = app.get_with_key("/api/v1/users/whoami", key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        bodies.push(body);
    }
    assert!(
        bodies
            .iter()
            .all(|b| *b == json!({"detail": "Invalid API key"})),
        "{bodies:?}"
    );

    // Reactivating the key brings it back.
    let res = admin
        .patch_json(
            &format!("/api/v1/api_key/{inactive_id}"),
            &json!({"is_active": true, "name": "renamed"}),
        )
        .await;
    assert_eq!(expect(res, StatusCode::OK).await["name"], "renamed");
    assert_eq!(app.whoami_status(&inactive).await, StatusCode::OK);
}

async fn other_users_keys_are_not_found(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, alice) = app.create_user(&admin, "alice").await;
    let (_, bob) = app.create_user(&admin, "bob").await;
    let (alice_key_id, alice_key) = app.create_key(&alice, "a").await;

    let bob = app.as_session(&bob);
    let res = bob.delete(&format!("/api/v1/api_key/{alice_key_id}")).await;
    assert_eq!(
        expect(res, StatusCode::NOT_FOUND).await,
        json!({"detail": "API Key not found"})
    );
    let res = bob
        .patch_json(
            &format!("/api/v1/api_key/{alice_key_id}"),
            &json!({"is_active": false}),
        )
        .await;
    expect(res, StatusCode::NOT_FOUND).await;
    let bobs_list = expect(bob.get("/api/v1/api_key/").await, StatusCode::OK).await;
    assert_eq!(bobs_list["total_count"], 0);
    // An unknown id is the same 404; a non-UUID is a 422.
    let res = bob
        .delete(&format!("/api/v1/api_key/{}", uuid::Uuid::new_v4()))
        .await;
    expect(res, StatusCode::NOT_FOUND).await;
    let res = bob.delete("/api/v1/api_key/not-a-uuid").await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.whoami_status(&alice_key).await, StatusCode::OK);
}

async fn a_key_has_exactly_its_owners_privileges(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, admin_key) = app.create_key(&admin, "admin").await;
    let (_, dave) = app.create_user(&admin, "dave").await;
    let (_, dave_key) = app.create_key(&dave, "dave").await;

    let (status, _) = app.get_with_key("/api/v1/users/", &admin_key).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get_with_key("/api/v1/users/", &dave_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["detail"].is_string());
    let (status, me) = app.get_with_key("/api/v1/users/whoami", &dave_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "dave");
    assert_eq!(me["is_superuser"], false);
    // Dave's key lists Dave's keys only.
    let (_, keys) = app.get_with_key("/api/v1/api_key/", &dave_key).await;
    assert_eq!(keys["total_count"], 1);
}

async fn usage_counters_are_batched_and_exact(backend: Backend) {
    // A long flush interval: only the list (which flushes first) and the
    // shutdown may write the counts.
    let app = TestApp::start_with(backend, &[("KEYGATE_USAGE_FLUSH_MS", "3600000")]).await;
    let admin = app.admin_token().await;
    let (key_id, key) = app.create_key(&admin, "counted").await;
    for _ in 0..5 {
        assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    }
    {
        use diesel::prelude::*;
        use keygate::db::schema::api_keys;
        let mut conn = app.db.connect();
        let stored: i64 = api_keys::table
            .find(&key_id)
            .select(api_keys::total_uses)
            .first(&mut conn)
            .unwrap();
        assert_eq!(stored, 0, "authenticating must not write to the database");
    }
    assert_eq!(app.state().usage.pending_keys(), 1);

    let list = expect(
        app.as_session(&admin).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let listed = &list["api_keys"][0];
    assert_eq!(listed["total_uses"], 5);
    assert!(listed["last_used_at"].is_string());

    // Uses after the list are written by the graceful stop.
    for _ in 0..3 {
        assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    }
    let db = app.stop().await;
    use diesel::prelude::*;
    use keygate::db::schema::api_keys;
    let mut conn = db.connect();
    let stored: i64 = api_keys::table
        .find(&key_id)
        .select(api_keys::total_uses)
        .first(&mut conn)
        .unwrap();
    assert_eq!(stored, 8);
}

async fn no_plaintext_key_is_stored(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let mut keys = Vec::new();
    for i in 0..3 {
        let (_, key) = app.create_key(&admin, &format!("k{i}")).await;
        assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
        keys.push(key);
    }
    let db = app.stop().await;
    let dump = db.dump();
    assert!(
        dump.contains(&keys[0][..8]),
        "the dump should hold the display prefix"
    );
    for key in &keys {
        assert!(
            !dump.contains(key.as_str()),
            "plaintext key found in the database"
        );
        assert!(!dump.contains(&key[3..]), "key body found in the database");
    }
    assert!(
        !dump.contains(crate::common::ADMIN_PASSWORD),
        "plaintext password stored"
    );
}

async fn bad_key_input_gets_clear_errors(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let admin = app.as_session(&token);
    let cases = [
        (
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"expires_at": "someday"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "x".repeat(300)}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"name": 42}), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, status) in cases {
        let res = admin.post_json("/api/v1/api_key/", &body).await;
        let answer = expect(res, status).await;
        assert!(answer["detail"].is_string(), "{answer}");
    }
    let broken = admin
        .request(Method::POST, "/api/v1/api_key/")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect(broken, StatusCode::UNPROCESSABLE_ENTITY).await;
    // Nothing was created by the refused requests.
    let list = expect(admin.get("/api/v1/api_key/").await, StatusCode::OK).await;
    assert_eq!(list["total_count"], 0);

    let future = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let res = admin
        .post_json(
            "/api/v1/api_key/",
            &json!({"name": "expiring", "expires_at": future}),
        )
        .await;
    let created = expect(res, StatusCode::OK).await;
    assert!(created["expires_at"]
        .as_str()
        .unwrap()
        .starts_with(&future[..16]));
    assert_eq!(
        app.whoami_status(created["api_key"].as_str().unwrap())
            .await,
        StatusCode::OK
    );
}
