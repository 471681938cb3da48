//! Langflow-style global variables, on both backends.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp};

crate::on_both_backends!(
    create_list_update_and_delete_variables,
    names_are_unique_per_user,
    bad_variable_input_is_refused,
    other_users_variables_are_not_found,
    credential_values_are_encrypted_at_rest,
);

async fn start(backend: Backend) -> (TestApp, String) {
    let app = TestApp::start_with(
        backend,
        &[("KEYGATE_SECRET_KEY", "variables-test-secret-0123456789")],
    )
    .await;
    let token = app.admin_token().await;
    (app, token)
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    expect(
        app.as_session(token)
            .post_json("/api/v1/variables/", &body)
            .await,
        StatusCode::CREATED,
    )
    .await
}

async fn create_list_update_and_delete_variables(backend: Backend) {
    let (app, token) = start(backend).await;
    let generic = create(
        &app,
        &token,
        json!({"name": "MODEL", "value": "gpt-4o-mini", "type": "Generic", "default_fields": ["model_name"]}),
    )
    .await;
    assert_eq!(generic["name"], "MODEL");
    assert_eq!(generic["type"], "Generic");
    assert_eq!(generic["value"], "gpt-4o-mini");
    assert_eq!(generic["default_fields"], json!(["model_name"]));
    assert!(generic["id"].is_string());

    let credential = create(
        &app,
        &token,
        json!({"name": "OPENAI_API_KEY", "value": "sk-variable-secret-123456", "type": "Credential", "default_fields": []}),
    )
    .await;
    assert_eq!(credential["type"], "Credential");
    assert_eq!(credential["value"], Value::Null);
    assert_eq!(credential["has_value"], true);
    assert!(!credential.to_string().contains("sk-variable-secret"));

    let list = expect(
        app.as_session(&token).get("/api/v1/variables/").await,
        StatusCode::OK,
    )
    .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let listed_credential = list.iter().find(|v| v["name"] == "OPENAI_API_KEY").unwrap();
    assert_eq!(listed_credential["value"], Value::Null);
    let listed_generic = list.iter().find(|v| v["name"] == "MODEL").unwrap();
    assert_eq!(listed_generic["value"], "gpt-4o-mini");

    let generic_path = format!("/api/v1/variables/{}", generic["id"].as_str().unwrap());
    let updated = expect(
        app.as_session(&token)
            .patch_json(
                &generic_path,
                &json!({"id": generic["id"], "value": "gpt-4o", "name": "DEFAULT_MODEL"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["value"], "gpt-4o");
    assert_eq!(updated["name"], "DEFAULT_MODEL");
    assert_eq!(updated["default_fields"], json!(["model_name"]));

    let credential_path = format!("/api/v1/variables/{}", credential["id"].as_str().unwrap());
    let updated = expect(
        app.as_session(&token)
            .patch_json(
                &credential_path,
                &json!({"value": "sk-variable-secret-rotated"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["value"], Value::Null);
    assert_eq!(updated["type"], "Credential");
    // Turning a Credential into a Generic needs a new value, so the old
    // secret is never revealed.
    let res = app
        .as_session(&token)
        .patch_json(&credential_path, &json!({"type": "Generic"}))
        .await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    let converted = expect(
        app.as_session(&token)
            .patch_json(
                &credential_path,
                &json!({"type": "Generic", "value": "now-public"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(converted["value"], "now-public");

    let res = app.as_session(&token).delete(&generic_path).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expect(
        app.as_session(&token).delete(&generic_path).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect(
        app.as_session(&token)
            .patch_json(&generic_path, &json!({"value": "x"}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

async fn names_are_unique_per_user(backend: Backend) {
    let (app, token) = start(backend).await;
    let first = create(
        &app,
        &token,
        json!({"name": "TOKEN", "value": "one", "type": "Credential"}),
    )
    .await;
    let duplicate = app
        .as_session(&token)
        .post_json(
            "/api/v1/variables/",
            &json!({"name": "TOKEN", "value": "two", "type": "Generic"}),
        )
        .await;
    assert!(expect(duplicate, StatusCode::CONFLICT).await["detail"]
        .as_str()
        .unwrap()
        .contains("TOKEN"));
    let other = create(
        &app,
        &token,
        json!({"name": "OTHER", "value": "x", "type": "Generic"}),
    )
    .await;
    let rename = app
        .as_session(&token)
        .patch_json(
            &format!("/api/v1/variables/{}", other["id"].as_str().unwrap()),
            &json!({"name": "TOKEN"}),
        )
        .await;
    expect(rename, StatusCode::CONFLICT).await;

    // Another user may use the same name.
    let (_, bob) = app.create_user(&token, "bob").await;
    let bobs = create(
        &app,
        &bob,
        json!({"name": "TOKEN", "value": "bob's", "type": "Credential"}),
    )
    .await;
    assert_ne!(bobs["id"], first["id"]);
}

async fn bad_variable_input_is_refused(backend: Backend) {
    let (app, token) = start(backend).await;
    for (body, hint) in [
        (json!({"value": "v", "type": "Generic"}), "name"),
        (
            json!({"name": "  ", "value": "v", "type": "Generic"}),
            "name",
        ),
        (json!({"name": "N", "type": "Generic"}), "value"),
        (
            json!({"name": "N", "value": "", "type": "Generic"}),
            "value",
        ),
        (json!({"name": "N", "value": "v", "type": "Secret"}), "type"),
        (
            json!({"name": "N", "value": "v", "surprise": true}),
            "surprise",
        ),
        (json!({"name": "N", "value": 5}), "JSON"),
    ] {
        let res = app
            .as_session(&token)
            .post_json("/api/v1/variables/", &body)
            .await;
        let error = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            error["detail"].as_str().unwrap().contains(hint),
            "{body} → {error}"
        );
    }
    let res = app
        .as_session(&token)
        .patch_json("/api/v1/variables/not-a-uuid", &json!({"value": "x"}))
        .await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    let created = create(
        &app,
        &token,
        json!({"name": "N", "value": "v", "type": "Generic"}),
    )
    .await;
    let res = app
        .as_session(&token)
        .patch_json(
            &format!("/api/v1/variables/{}", created["id"].as_str().unwrap()),
            &json!({"id": uuid::Uuid::new_v4().to_string(), "value": "x"}),
        )
        .await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    let list = expect(
        app.as_session(&token).get("/api/v1/variables/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing else was stored");
    assert_eq!(list[0]["value"], "v");
}

async fn other_users_variables_are_not_found(backend: Backend) {
    let (app, admin) = start(backend).await;
    let variable = create(
        &app,
        &admin,
        json!({"name": "SECRET", "value": "admin-only-value", "type": "Credential"}),
    )
    .await;
    let path = format!("/api/v1/variables/{}", variable["id"].as_str().unwrap());
    let (_, bob) = app.create_user(&admin, "bob").await;
    expect(
        app.as_session(&bob)
            .patch_json(&path, &json!({"value": "hijacked"}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect(
        app.as_session(&bob).delete(&path).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let bob_list = expect(
        app.as_session(&bob).get("/api/v1/variables/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(bob_list, json!([]));

    // A key acts for its owner.
    let (_, admin_key) = app.create_key(&admin, "k").await;
    let (status, list) = app.get_with_key("/api/v1/variables/", &admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["id"], variable["id"]);
    let (_, bob_key) = app.create_key(&bob, "k").await;
    let res = app.as_key(&bob_key).delete(&path).await;
    expect(res, StatusCode::NOT_FOUND).await;
    let res = app.as_key(&admin_key).delete(&path).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

async fn credential_values_are_encrypted_at_rest(backend: Backend) {
    let (app, token) = start(backend).await;
    create(
        &app,
        &token,
        json!({"name": "C", "value": "credential-plaintext-7788", "type": "Credential"}),
    )
    .await;
    create(
        &app,
        &token,
        json!({"name": "G", "value": "generic-plaintext-5566", "type": "Generic"}),
    )
    .await;
    // A Credential is the default type.
    let defaulted = create(
        &app,
        &token,
        json!({"name": "D", "value": "default-typed-9911"}),
    )
    .await;
    assert_eq!(defaulted["type"], "Credential");
    assert_eq!(defaulted["value"], Value::Null);
    let dump = app.db.dump();
    assert!(
        dump.contains("generic-plaintext-5566"),
        "the scan sees stored text"
    );
    assert!(!dump.contains("credential-plaintext-7788"));
    assert!(!dump.contains("default-typed-9911"));
}
