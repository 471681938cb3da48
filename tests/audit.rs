//! The audit log: what each action records, `GET /api/v1/audit` (its
//! filters, paging, the superuser's view, isolation between users), that
//! no key, password or secret reaches it, and retention.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp};

crate::on_both_backends!(
    sign_ins_are_audited,
    key_actions_are_audited_with_the_actor_key,
    secrets_and_flows_are_audited_without_their_values,
    accounts_and_passwords_are_audited,
    leaked_keys_and_secret_rotation_are_audited,
    filters_and_paging,
    users_see_only_their_own_events,
    bad_parameters_are_refused,
    refused_changes_and_reads_write_nothing,
    old_events_are_pruned,
    command_line_actions_are_audited,
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
                &json!({"name": "renamed", "rate_limit": {"requests": 50, "per_seconds": 60}}),
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
               "flow_id": null, "expires_at": null, "rate_limit": null})
    );
    for event in [revoke, rotate, update, create_other] {
        assert_eq!(event["actor_key_id"], key_id.as_str(), "{event}");
        assert_eq!(event["actor_user_id"], alice.as_str());
        assert_eq!(event["user_id"], alice.as_str());
    }
    assert_eq!(create_other["target_id"], other_id.as_str());
    assert_eq!(update["target_id"], other_id.as_str());
    assert_eq!(
        update["detail"],
        json!({"name": "renamed", "rate_limit": {"requests": 50, "per_seconds": 60},
               "scopes": ["read"], "allowed_ips": null}),
        "a change to the key's policy records the whole policy it leaves"
    );
    assert_eq!(rotate["target_id"], other_id.as_str());
    assert_eq!(rotate["detail"]["grace_seconds"], 0);
    assert_eq!(rotate["detail"]["new_key_id"], new_id.as_str());
    assert!(rotate["detail"]["old_key_expires_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
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

/// Every event a superuser can see, as one JSON text.
async fn everything(app: &TestApp, admin: &str) -> String {
    Value::Array(events(app, admin, "limit=500").await).to_string()
}

async fn secrets_and_flows_are_audited_without_their_values(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (alice, token) = app.create_user(&admin, "alice").await;
    let as_alice = app.as_session(&token);
    let credential_secret = "generic-credential-secret-value-1";
    expect(
        as_alice
            .post_json(
                "/api/v1/providers/generic",
                &json!({"secret_key": credential_secret}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    expect(
        as_alice
            .post_json(
                "/api/v1/providers/generic",
                &json!({"secret_key": "generic-credential-secret-value-2"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    expect(
        as_alice.delete("/api/v1/providers/generic").await,
        StatusCode::OK,
    )
    .await;
    let variable_secret = "credential-variable-secret-value";
    let generic_value = "generic-variable-plain-value";
    let variable = expect(
        as_alice
            .post_json(
                "/api/v1/variables/",
                &json!({"name": "TOKEN", "value": variable_secret, "type": "Credential"}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    let variable_id = variable["id"].as_str().unwrap().to_string();
    expect(
        as_alice
            .patch_json(
                &format!("/api/v1/variables/{variable_id}"),
                &json!({"name": "TOKEN2", "value": "credential-variable-secret-value-2"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let generic = expect(
        as_alice
            .post_json(
                "/api/v1/variables/",
                &json!({"name": "PLAIN", "value": generic_value, "type": "Generic"}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    expect(
        as_alice
            .delete(&format!(
                "/api/v1/variables/{}",
                generic["id"].as_str().unwrap()
            ))
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;

    let flow = expect(
        as_alice
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "Bot", "endpoint_name": "bot", "data": {"nodes": [], "edges": []}}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    let flow_id = flow["id"].as_str().unwrap().to_string();
    expect(
        as_alice
            .patch_json(
                &format!("/api/v1/flows/{flow_id}"),
                &json!({"access": "public", "description": "d"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    expect(
        as_alice
            .put_json(
                &format!("/api/v1/flows/{flow_id}"),
                &json!({"name": "Bot 2"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let bound = expect(
        as_alice
            .post_json("/api/v1/api_key/", &json!({"flow_id": flow_id}))
            .await,
        StatusCode::OK,
    )
    .await;
    let bound_id = bound["id"].as_str().unwrap().to_string();
    expect(
        as_alice.delete(&format!("/api/v1/flows/{flow_id}")).await,
        StatusCode::OK,
    )
    .await;

    let own = events(&app, &token, "").await;
    let own_actions = actions(&own);
    let expected = [
        "key.revoke",
        "flow.delete",
        "key.create",
        "flow.update",
        "flow.update",
        "flow.create",
        "variable.delete",
        "variable.create",
        "variable.update",
        "variable.create",
        "credential.delete",
        "credential.save",
        "credential.save",
    ];
    // The delete's two events share a time; their order between them is
    // by id.
    let mut head: Vec<&str> = own_actions[..2].to_vec();
    head.sort_unstable();
    assert_eq!(head, ["flow.delete", "key.revoke"]);
    assert_eq!(&own_actions[2..13], &expected[2..]);
    let find =
        |action: &str| -> Vec<&Value> { own.iter().filter(|e| e["action"] == action).collect() };
    let saves = find("credential.save");
    assert_eq!(saves[0]["detail"]["replaced"], true);
    assert_eq!(saves[1]["detail"]["replaced"], false);
    assert_eq!(saves[1]["detail"]["provider"], "generic");
    assert_eq!(saves[0]["target_id"], saves[1]["target_id"]);
    assert_eq!(
        find("credential.delete")[0]["target_id"],
        saves[0]["target_id"]
    );
    let update = find("variable.update")[0];
    assert_eq!(update["target_id"], variable_id.as_str());
    assert_eq!(
        update["detail"],
        json!({"name": "TOKEN2", "type": "Credential", "changed": ["name", "value"]})
    );
    assert_eq!(
        find("variable.delete")[0]["detail"],
        json!({"name": "PLAIN", "type": "Generic"})
    );
    let flow_updates = find("flow.update");
    assert_eq!(flow_updates[0]["detail"]["replaced"], true);
    assert_eq!(flow_updates[0]["detail"]["name"], "Bot 2");
    assert_eq!(
        flow_updates[1]["detail"]["changed"],
        json!(["description", "access"])
    );
    assert_eq!(flow_updates[1]["detail"]["access"], "public");
    let deleted = find("flow.delete")[0];
    assert_eq!(deleted["target_id"], flow_id.as_str());
    assert_eq!(deleted["detail"]["bound_keys_revoked"], 1);
    let revoked = find("key.revoke")[0];
    assert_eq!(revoked["target_id"], bound_id.as_str());
    assert_eq!(revoked["detail"]["reason"], "flow_deleted");
    for event in &own {
        assert_eq!(event["user_id"], alice.as_str());
    }

    // No secret value in any field, nor anywhere at rest.
    let all = everything(&app, &admin).await;
    for secret in [
        credential_secret,
        "generic-credential-secret-value-2",
        variable_secret,
        "credential-variable-secret-value-2",
        generic_value,
        bound["api_key"].as_str().unwrap(),
        "alice-password",
        crate::common::ADMIN_PASSWORD,
    ] {
        assert!(!all.contains(secret), "{secret} in the audit log");
    }
}

async fn accounts_and_passwords_are_audited(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_ENABLE_SIGNUP", "true")]).await;
    let admin = app.admin_token().await;
    let admin_id = admin_id(&app, &admin).await;
    let (alice, token) = app.create_user(&admin, "alice").await;
    // Public sign-up: nobody acted.
    let signed_up = expect(
        app.anon()
            .post_json(
                "/api/v1/users/",
                &json!({"username": "carol", "password": "carol-password"}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    let carol = signed_up["id"].as_str().unwrap().to_string();

    // Alice's own password: a wrong current one first.
    let res = app
        .as_session(&token)
        .patch_json(
            &format!("/api/v1/users/{alice}"),
            &json!({"password": "alice-new-password", "current_password": "wrong-password"}),
        )
        .await;
    expect(res, StatusCode::FORBIDDEN).await;
    expect(
        app.as_session(&token)
            .patch_json(
                &format!("/api/v1/users/{alice}"),
                &json!({"password": "alice-new-password", "current_password": "alice-password"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    // The superuser resets it and renames her.
    expect(
        app.as_session(&admin)
            .send_json(
                Method::PATCH,
                &format!("/api/v1/users/{alice}/reset-password"),
                &json!({"password": "alice-third-password"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    expect(
        app.as_session(&admin)
            .patch_json(
                &format!("/api/v1/users/{alice}"),
                &json!({"username": "alice2", "is_superuser": false}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    // The reset ended her sessions; she signs in again, renamed.
    let token = app.login("alice2", "alice-third-password").await;
    let own = events(&app, &token, "").await;
    assert_eq!(
        actions(&own),
        [
            "login.success",
            "user.update",
            "password.change",
            "password.change",
            "login.failure",
            "login.success",
            "user.create"
        ]
    );
    assert_eq!(
        own[1]["detail"],
        json!({"username": "alice2", "is_superuser": false})
    );
    assert_eq!(own[1]["actor_user_id"], admin_id.as_str());
    assert_eq!(own[2]["actor_user_id"], admin_id.as_str());
    assert_eq!(own[2]["target_id"], alice.as_str());
    assert_eq!(own[3]["actor_user_id"], alice.as_str());
    assert_eq!(
        own[4]["detail"],
        json!({"method": "current_password", "reason": "wrong_password"})
    );
    assert_eq!(own[4]["actor_user_id"], alice.as_str());
    assert_eq!(own[6]["actor_user_id"], admin_id.as_str());
    assert_eq!(
        own[6]["detail"],
        json!({"via": "admin", "username": "alice", "is_active": true, "is_superuser": false})
    );

    // The superuser revokes a key of Alice's: her event, the superuser acting.
    let (key_id, _) = app.create_key(&token, "k").await;
    expect(
        app.as_session(&admin)
            .delete(&format!("/api/v1/api_key/{key_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    let revoked = &events(&app, &token, "action=key.revoke").await[0];
    assert_eq!(revoked["user_id"], alice.as_str());
    assert_eq!(revoked["actor_user_id"], admin_id.as_str());
    assert_eq!(revoked["target_id"], key_id.as_str());
    // All at once, with a session.
    let (a, _) = app.create_key(&token, "a").await;
    let (b, _) = app.create_key(&token, "b").await;
    expect(
        app.as_session(&admin)
            .send_json(
                Method::DELETE,
                &format!("/api/v1/api_key/?user_id={alice}"),
                &json!({"all": true}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let all_revoked = events(&app, &token, "action=key.revoke&limit=2").await;
    let mut targets: Vec<&str> = all_revoked
        .iter()
        .map(|e| e["target_id"].as_str().unwrap())
        .collect();
    targets.sort_unstable();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort_unstable();
    assert_eq!(targets, expected);
    assert!(all_revoked.iter().all(|e| e["detail"]["all"] == true));

    // Deleting a user keeps their history for the superuser.
    expect(
        app.as_session(&admin)
            .delete(&format!("/api/v1/users/{alice}"))
            .await,
        StatusCode::OK,
    )
    .await;
    let history = events(&app, &admin, &format!("user_id={alice}&limit=500")).await;
    assert_eq!(history[0]["action"], "user.delete");
    assert_eq!(history[0]["detail"], json!({"username": "alice2"}));
    assert_eq!(history.len(), own.len() + 7);
    let carols = events(&app, &admin, &format!("user_id={carol}")).await;
    assert_eq!(actions(&carols), ["user.create"]);
    assert_eq!(carols[0]["actor_user_id"], Value::Null);
    assert_eq!(carols[0]["detail"]["via"], "signup");
    let all = everything(&app, &admin).await;
    for password in [
        "alice-password",
        "alice-new-password",
        "alice-third-password",
        "wrong-password",
        "carol-password",
    ] {
        assert!(!all.contains(password));
    }
}

async fn leaked_keys_and_secret_rotation_are_audited(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (alice, token) = app.create_user(&admin, "alice").await;
    let (key_id, key) = app.create_key(&token, "leaky").await;
    let res = app
        .anon()
        .request(Method::POST, "/api/v1/api_key/revoke-leaked")
        .header("user-agent", "secret-scanner/2")
        .json(&json!({"keys": [key, "sk-not-a-stored-key"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let leaked = events(&app, &token, "action=key.revoke_leaked").await;
    assert_eq!(leaked.len(), 1);
    assert_eq!(leaked[0]["user_id"], alice.as_str());
    assert_eq!(leaked[0]["target_id"], key_id.as_str());
    assert_eq!(leaked[0]["actor_user_id"], Value::Null);
    assert_eq!(leaked[0]["actor_key_id"], Value::Null);
    assert_eq!(leaked[0]["address"], "127.0.0.1");
    assert_eq!(leaked[0]["user_agent"], "secret-scanner/2");

    // A secret rotation (the command line's transaction) is nobody's event.
    let new_box = keygate::crypto::SecretBox::new("a-new-secret-key-for-the-audit-test").unwrap();
    let mut conn = app.db.connect();
    let rotated =
        keygate::cli::reencrypt_everything(&mut conn, &app.state().core.secrets, &new_box).unwrap();
    let rotations = events(&app, &admin, "action=secret.rotate").await;
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0]["user_id"], Value::Null);
    assert_eq!(rotations[0]["address"], Value::Null);
    assert_eq!(
        rotations[0]["detail"],
        json!({"via": "command_line", "credentials": rotated.credentials,
               "variables": rotated.variables})
    );
    assert!(events(&app, &token, "action=secret.*").await.is_empty());
    let all = everything(&app, &admin).await;
    assert!(!all.contains("a-new-secret-key-for-the-audit-test"));
    assert!(!all.contains(&key));
}

/// Creates `n` variables as the session `token` (one `variable.create`
/// each); their ids, oldest first.
async fn make_variables(app: &TestApp, token: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let created = expect(
            app.as_session(token)
                .post_json(
                    "/api/v1/variables/",
                    &json!({"name": format!("{prefix}{i}"), "value": "v", "type": "Generic"}),
                )
                .await,
            StatusCode::CREATED,
        )
        .await;
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    ids
}

async fn filters_and_paging(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, token) = app.create_user(&admin, "alice").await;
    let ids = make_variables(&app, &token, "V", 7).await;

    // Pages of 3, each starting after the last id of the one before.
    let mut seen = Vec::new();
    let mut query = "action=variable.create&limit=3".to_string();
    loop {
        let page = events(&app, &token, &query).await;
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        seen.extend(
            page.iter()
                .map(|e| e["target_id"].as_str().unwrap().to_string()),
        );
        let last = page.last().unwrap()["id"].as_str().unwrap().to_string();
        query = format!("action=variable.create&limit=3&before={last}");
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "every event once, newest first");

    // The default page is 50; a class filter; one action.
    assert_eq!(events(&app, &token, "").await.len(), 9);
    assert_eq!(events(&app, &token, "action=variable.*").await.len(), 7);
    assert_eq!(events(&app, &token, "action=login.success").await.len(), 1);
    assert!(events(&app, &token, "action=flow.*").await.is_empty());

    // A time cursor: strictly earlier events.
    let all = events(&app, &token, "action=variable.create").await;
    let fourth = all[3]["at"].as_str().unwrap().to_string();
    let earlier = events(
        &app,
        &token,
        &format!(
            "action=variable.create&before={}",
            fourth.replace('+', "%2B")
        ),
    )
    .await;
    assert_eq!(
        earlier.iter().map(|e| e["id"].clone()).collect::<Vec<_>>(),
        all[4..].iter().map(|e| e["id"].clone()).collect::<Vec<_>>()
    );
    assert!(events(&app, &token, "before=2000-01-01T00:00:00Z")
        .await
        .is_empty());
    // The limit, up to 500.
    assert_eq!(events(&app, &token, "limit=2").await.len(), 2);
    assert_eq!(events(&app, &token, "limit=500").await.len(), 9);
    // The key id filter matches nothing of variables.
    let (key_id, _) = app.create_key(&token, "k").await;
    let by_key = events(&app, &token, &format!("key_id={key_id}")).await;
    assert_eq!(actions(&by_key), ["key.create"]);
}

async fn users_see_only_their_own_events(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let admin_id = admin_id(&app, &admin).await;
    let (alice, alice_token) = app.create_user(&admin, "alice").await;
    let (bob, bob_token) = app.create_user(&admin, "bob").await;
    make_variables(&app, &alice_token, "A", 2).await;
    let alices = events(&app, &alice_token, "").await;
    assert!(alices.iter().all(|e| e["user_id"] == alice.as_str()));
    let bobs = events(&app, &bob_token, "").await;
    assert_eq!(actions(&bobs), ["login.success", "user.create"]);
    assert!(bobs.iter().all(|e| e["user_id"] == bob.as_str()));

    // Naming someone else is refused; naming oneself is fine.
    let res = app
        .as_session(&bob_token)
        .get(&format!("/api/v1/audit?user_id={alice}"))
        .await;
    let body = expect(res, StatusCode::FORBIDDEN).await;
    assert_eq!(body["detail"], "The user doesn't have enough privileges");
    assert_eq!(
        events(&app, &bob_token, &format!("user_id={bob}"))
            .await
            .len(),
        2
    );
    // Alice's event ids are no cursor for Bob: nothing before them.
    let alice_event = alices[0]["id"].as_str().unwrap();
    assert!(events(&app, &bob_token, &format!("before={alice_event}"))
        .await
        .is_empty());
    // Nor does her key's id find anything of hers.
    let (alice_key, _) = app.create_key(&alice_token, "k").await;
    assert!(events(&app, &bob_token, &format!("key_id={alice_key}"))
        .await
        .is_empty());

    // The superuser sees everyone, nobody's events included, and narrows
    // to one user.
    let all = events(&app, &admin, "limit=500").await;
    for user in [&alice, &bob, &admin_id] {
        assert!(all.iter().any(|e| e["user_id"] == user.as_str()));
    }
    let only_alice = events(&app, &admin, &format!("user_id={alice}&limit=500")).await;
    assert_eq!(only_alice.len(), alices.len() + 1);
    assert!(only_alice.iter().all(|e| e["user_id"] == alice.as_str()));

    // With keys: `read` is needed, and the superuser's view needs `admin`.
    let created = expect(
        app.as_session(&admin)
            .post_json("/api/v1/api_key/", &json!({"scopes": ["read"]}))
            .await,
        StatusCode::OK,
    )
    .await;
    let read_only = created["api_key"].as_str().unwrap().to_string();
    let (status, body) = app
        .get_with_key("/api/v1/audit?limit=500", &read_only)
        .await;
    assert_eq!(status, StatusCode::OK);
    let events_seen = body["events"].as_array().unwrap();
    assert!(!events_seen.is_empty());
    assert!(events_seen
        .iter()
        .all(|e| e["user_id"] == admin_id.as_str()));
    let (status, body) = app
        .get_with_key(&format!("/api/v1/audit?user_id={alice}"), &read_only)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["detail"], "This API key lacks the 'admin' scope");
    let created = expect(
        app.as_session(&admin)
            .post_json("/api/v1/api_key/", &json!({"scopes": ["read", "admin"]}))
            .await,
        StatusCode::OK,
    )
    .await;
    let admin_key = created["api_key"].as_str().unwrap().to_string();
    let (status, body) = app
        .get_with_key(
            &format!("/api/v1/audit?user_id={alice}&limit=500"),
            &admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"].as_array().unwrap().len(), only_alice.len());
    let created = expect(
        app.as_session(&admin)
            .post_json("/api/v1/api_key/", &json!({"scopes": ["write", "run"]}))
            .await,
        StatusCode::OK,
    )
    .await;
    let no_read = created["api_key"].as_str().unwrap().to_string();
    let res = app.as_key(&no_read).get("/api/v1/audit").await;
    assert_eq!(res.headers()["x-keygate-reason"], "MISSING_SCOPE");
    expect(res, StatusCode::FORBIDDEN).await;
    expect(
        app.anon().get("/api/v1/audit").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

async fn bad_parameters_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    for (query, detail) in [
        ("limit=0", "limit must be 1 to 500"),
        ("limit=501", "limit must be 1 to 500"),
        ("limit=-5", "limit must be 1 to 500"),
        ("limit=ten", ""),
        ("action=key.explode", "Unknown action"),
        ("action=*", "Unknown action"),
        ("key_id=not-a-uuid", "key_id must be a UUID"),
        ("user_id=42", "user_id must be a UUID"),
        ("before=yesterday", "before must be an event id"),
        ("acton=key.create", ""),
    ] {
        let res = app
            .as_session(&admin)
            .get(&format!("/api/v1/audit?{query}"))
            .await;
        let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        let text = body["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{query}: {text}");
    }
    // The key may also come as a query parameter.
    let (_, key) = app.create_key(&admin, "q").await;
    let res = app.as_key_in_query(&key).get("/api/v1/audit?limit=1").await;
    let body = expect(res, StatusCode::OK).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
}

async fn refused_changes_and_reads_write_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (key_id, key) = app.create_key(&admin, "reader").await;
    let count = |app: &TestApp| {
        use diesel::prelude::*;
        use keygate::db::schema::audit_events;
        audit_events::table
            .count()
            .get_result::<i64>(&mut app.db.connect())
            .unwrap()
    };
    let before = count(&app);
    // Reads with a key or a session are not audited.
    for _ in 0..3 {
        assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
        expect(
            app.as_key(&key).get("/api/v1/api_key/").await,
            StatusCode::OK,
        )
        .await;
        expect(
            app.as_session(&admin).get("/api/v1/flows/").await,
            StatusCode::OK,
        )
        .await;
    }
    // Refused changes leave no event.
    make_variables(&app, &admin, "X", 1).await;
    let after_one = count(&app);
    assert_eq!(after_one, before + 1);
    expect(
        app.as_session(&admin)
            .post_json(
                "/api/v1/variables/",
                &json!({"name": "X0", "value": "v", "type": "Generic"}),
            )
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    let unknown = uuid::Uuid::new_v4();
    expect(
        app.as_session(&admin)
            .delete(&format!("/api/v1/api_key/{unknown}"))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect(
        app.as_session(&admin)
            .delete(&format!("/api/v1/variables/{unknown}"))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let me = admin_id(&app, &admin).await;
    expect(
        app.as_session(&admin)
            .patch_json(
                &format!("/api/v1/users/{me}"),
                &json!({"is_superuser": false}),
            )
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect(
        app.as_session(&admin)
            .patch_json(
                &format!("/api/v1/api_key/{key_id}"),
                &json!({"scopes": ["nope"]}),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(count(&app), after_one);
}

/// Inserts an event straight into the database, `days` old.
fn insert_aged_event(app: &TestApp, days: i64) -> String {
    use diesel::prelude::*;
    use keygate::db::schema::audit_events;
    let id = uuid::Uuid::new_v4().to_string();
    let at = keygate::db::now() - chrono::Duration::days(days);
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::id.eq(&id),
            audit_events::at.eq(at),
            audit_events::action.eq("key.create"),
            audit_events::detail.eq("{}"),
        ))
        .execute(&mut app.db.connect())
        .unwrap();
    id
}

fn event_exists(app: &TestApp, id: &str) -> bool {
    use diesel::prelude::*;
    use keygate::db::schema::audit_events;
    audit_events::table
        .find(id)
        .count()
        .get_result::<i64>(&mut app.db.connect())
        .unwrap()
        == 1
}

async fn old_events_are_pruned(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let ancient = insert_aged_event(&app, 91);
    let older = insert_aged_event(&app, 10);
    let fresh: Vec<Value> = events(&app, &admin, "")
        .await
        .into_iter()
        .filter(|e| e["id"] != ancient.as_str() && e["id"] != older.as_str())
        .collect();
    // The first superuser's creation at the first start, then a sign-in.
    assert_eq!(actions(&fresh), ["login.success", "user.create"]);
    assert_eq!(fresh[1]["detail"]["via"], "bootstrap");
    assert_eq!(fresh[1]["actor_user_id"], Value::Null);
    assert_eq!(fresh[1]["address"], Value::Null);
    // The default retention (90 days), as the hourly prune runs it.
    let deleted = keygate::audit::retention::prune(&mut app.db.connect(), 90).unwrap();
    assert_eq!(deleted, 1);
    assert!(!event_exists(&app, &ancient));
    assert!(event_exists(&app, &older));

    // A restart with a shorter retention prunes at start.
    let db = app.stop().await;
    let app = TestApp::start_on(db, &[("KEYGATE_AUDIT_RETENTION_DAYS", "5")]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while event_exists(&app, &older) {
        assert!(
            std::time::Instant::now() < deadline,
            "the event past its retention was never pruned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for event in &fresh {
        assert!(event_exists(&app, event["id"].as_str().unwrap()));
    }
    // An invalid retention stops the start with the variable's name.
    let mut env = crate::common::base_env(&app.db);
    env.insert("KEYGATE_AUDIT_RETENTION_DAYS".into(), "0".into());
    let error = keygate::config::Config::from_map(&env).unwrap_err();
    assert!(
        error.starts_with("KEYGATE_AUDIT_RETENTION_DAYS: "),
        "{error}"
    );
}

async fn command_line_actions_are_audited(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let admin_id = admin_id(&app, &admin).await;
    let mut env = crate::common::base_env(&app.db);
    let output = crate::ops::keygate(&env)
        .args(["api-key", "--name", "from-cli"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let key = String::from_utf8(output.stdout).unwrap().trim().to_string();
    env.insert("KEYGATE_ENABLE_SUPERUSER_CLI".into(), "true".into());
    let password = "second-superuser-password";
    let output = crate::ops::keygate(&env)
        .args(["superuser", "--username", "root2", "--password", password])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    let created = events(&app, &admin, "action=key.create").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["user_id"], admin_id.as_str());
    assert_eq!(created[0]["actor_user_id"], Value::Null);
    assert_eq!(created[0]["address"], Value::Null);
    assert_eq!(created[0]["detail"]["via"], "command_line");
    assert_eq!(created[0]["detail"]["name"], "from-cli");
    let users = events(&app, &admin, "action=user.create&limit=1").await;
    assert_eq!(users[0]["detail"]["username"], "root2");
    assert_eq!(users[0]["detail"]["is_superuser"], true);
    assert_eq!(users[0]["detail"]["via"], "command_line");
    let all = everything(&app, &admin).await;
    assert!(!all.contains(&key) && !all.contains(password));
}
