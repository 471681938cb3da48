//! The audit log: what each action records, `GET /api/v1/audit` (its
//! filters, paging, the superuser's view, isolation between users), that
//! no key, password or secret reaches it, and retention.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp};

crate::on_both_backends!(
    sign_ins_are_audited,
    key_actions_are_audited_with_the_actor_key,
);

const AGENT: &str = "audit-test/1.0";

/// `GET /api/v1/audit?{query}` with the session `token`; the events.
async fn events(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let res = app
        .as_session(token)
        .get(&format!("/api/v1/audit?{query}"))
        .await;
    let body = expect(res, StatusCode::OK).await;
    body["events"].as_array().unwrap().clone()
}

/// The id of the user the session `token` belongs to.
async fn admin_id(app: &TestApp, token: &str) -> String {
    let me = expect(
        app.as_session(token).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await;
    me["id"].as_str().unwrap().to_string()
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

/// Signs in with a form and the test's user agent; the status and body.
async fn sign_in(app: &TestApp, username: &str, password: &str) -> (StatusCode, Value) {
    let res = app
        .anon()
        .request(Method::POST, "/api/v1/login")
        .header("user-agent", AGENT)
        .form(&[("username", username), ("password", password)])
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn sign_ins_are_audited(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (alice, _) = app.create_user(&admin, "alice").await;
    let (status, _) = sign_in(&app, "alice", "not-alices-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A password pasted into the username field is never stored.
    let pasted = "pasted-password-in-username-field";
    let (status, _) = sign_in(&app, pasted, "whatever-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = sign_in(&app, "alice", "alice-password").await;
    assert_eq!(status, StatusCode::OK);
    let token = body["access_token"].as_str().unwrap().to_string();

    let own = events(&app, &token, "").await;
    // Newest first: this sign-in, the failure, the first sign-in (by
    // create_user), the account's creation.
    assert_eq!(
        actions(&own),
        [
            "login.success",
            "login.failure",
            "login.success",
            "user.create"
        ]
    );
    let success = &own[0];
    assert_eq!(success["user_id"], alice.as_str());
    assert_eq!(success["actor_user_id"], alice.as_str());
    assert_eq!(success["actor_key_id"], Value::Null);
    assert_eq!(success["address"], "127.0.0.1");
    assert_eq!(success["user_agent"], AGENT);
    assert_eq!(success["detail"], json!({"method": "password"}));
    assert!(success["id"].as_str().unwrap().len() == 36);
    assert!(success["at"].as_str().unwrap().ends_with('Z'));
    let failure = &own[1];
    assert_eq!(failure["user_id"], alice.as_str());
    assert_eq!(failure["actor_user_id"], Value::Null);
    assert_eq!(
        failure["detail"],
        json!({"method": "password", "reason": "wrong_password"})
    );

    // The unknown name is nobody's event: only the superuser sees it, and
    // not the text typed.
    assert!(!own.iter().any(|e| e["detail"]["reason"] == "unknown_user"));
    let all = events(&app, &admin, "action=login.failure").await;
    let unknown: Vec<&Value> = all
        .iter()
        .filter(|e| e["detail"]["reason"] == "unknown_user")
        .collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["user_id"], Value::Null);
    assert_eq!(unknown[0]["address"], "127.0.0.1");
    let everything = events(&app, &admin, "limit=500").await;
    assert!(!Value::Array(everything).to_string().contains(pasted));

    // Logout ends the session and says so; without a session nothing is
    // written.
    let res = app
        .as_session(&token)
        .request(Method::POST, "/api/v1/logout")
        .header("user-agent", AGENT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    expect(app.anon().post("/api/v1/logout").await, StatusCode::OK).await;
    let logouts = events(&app, &admin, "action=logout").await;
    assert_eq!(logouts.len(), 1);
    assert_eq!(logouts[0]["user_id"], alice.as_str());
    assert_eq!(logouts[0]["user_agent"], AGENT);

    // An inactive user who knows the password is refused, and audited.
    expect(
        app.as_session(&admin)
            .patch_json(
                &format!("/api/v1/users/{alice}"),
                &json!({"is_active": false}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let (status, _) = sign_in(&app, "alice", "alice-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let alices = events(&app, &admin, &format!("user_id={alice}&limit=2")).await;
    assert_eq!(actions(&alices), ["login.failure", "user.update"]);
    assert_eq!(alices[0]["detail"]["reason"], "inactive_user");
    assert_eq!(alices[1]["detail"], json!({"is_active": false}));
    assert_eq!(alices[1]["actor_user_id"], admin_id(&app, &admin).await);
}

async fn key_actions_are_audited_with_the_actor_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (alice, token) = app.create_user(&admin, "alice").await;
    let created = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/api_key/",
                &json!({"name": "ci", "scopes": ["read", "write"]}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let (key_id, key) = (
        created["id"].as_str().unwrap().to_string(),
        created["api_key"].as_str().unwrap().to_string(),
    );
    // With the key: another key, renamed, rotated, then revoked.
    let other = expect(
        app.as_key(&key)
            .post_json(
                "/api/v1/api_key/",
                &json!({"name": "second", "scopes": ["read"]}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let other_id = other["id"].as_str().unwrap().to_string();
    let other_key = other["api_key"].as_str().unwrap().to_string();
    expect(
        app.as_key(&key)
            .patch_json(
                &format!("/api/v1/api_key/{other_id}"),
                &json!({"name": "renamed"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let rotated = expect(
        app.as_key(&key)
            .post_json(
                &format!("/api/v1/api_key/{other_id}/rotate"),
                &json!({"grace_seconds": 0}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let new_id = rotated["id"].as_str().unwrap().to_string();
    let new_key = rotated["api_key"].as_str().unwrap().to_string();
    expect(
        app.as_key(&key)
            .delete(&format!("/api/v1/api_key/{new_id}"))
            .await,
        StatusCode::OK,
    )
    .await;

    let own = events(&app, &token, "action=key.*").await;
    assert_eq!(
        actions(&own),
        [
            "key.revoke",
            "key.rotate",
            "key.update",
            "key.create",
            "key.create"
        ]
    );
    let [revoke, rotate, update, create_other, create] = &own[..] else {
        unreachable!()
    };
    assert_eq!(create["actor_key_id"], Value::Null, "made with a session");
    assert_eq!(create["target_id"], key_id.as_str());
    assert_eq!(
        create["detail"],
        json!({"name": "ci", "scopes": ["read", "write"], "allowed_ips": null,
               "flow_id": null, "expires_at": null})
    );
    for event in [revoke, rotate, update, create_other] {
        assert_eq!(event["actor_key_id"], key_id.as_str(), "{event}");
        assert_eq!(event["actor_user_id"], alice.as_str());
        assert_eq!(event["user_id"], alice.as_str());
    }
    assert_eq!(create_other["target_id"], other_id.as_str());
    assert_eq!(update["target_id"], other_id.as_str());
    assert_eq!(update["detail"], json!({"name": "renamed"}));
    assert_eq!(rotate["target_id"], other_id.as_str());
    assert_eq!(rotate["detail"]["grace_seconds"], 0);
    assert_eq!(rotate["detail"]["new_key_id"], new_id.as_str());
    assert_eq!(revoke["target_id"], new_id.as_str());

    // key_id: events about the key or made with it.
    let with_key = events(&app, &token, &format!("key_id={key_id}")).await;
    assert_eq!(with_key.len(), 5);
    let about_other = events(&app, &token, &format!("key_id={other_id}")).await;
    assert_eq!(
        actions(&about_other),
        ["key.rotate", "key.update", "key.create"]
    );

    // The key may read its owner's log with `read`.
    let (status, body) = app.get_with_key("/api/v1/audit", &key).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.to_string();
    for secret in [&key, &other_key, &new_key] {
        assert!(!text.contains(secret.as_str()));
        assert!(!text.contains(&secret[3..20]));
    }
}
