//! What the settings UI needs from the API beyond the Langflow routes:
//! flow `warnings` for credentials and variables the owner has not stored,
//! the session's expiry and auto-login flag, a signed-out session answer
//! that is not an error, and connection errors that name the port.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp, ADMIN};

crate::on_both_backends!(
    flows_warn_about_missing_credentials_and_variables,
    the_session_answer_carries_expiry_and_auto_login,
);

async fn start(backend: Backend) -> (TestApp, String) {
    let app = TestApp::start_with(
        backend,
        &[
            ("KEYGATE_SECRET_KEY", "ui-support-test-secret-0123456789"),
            ("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true"),
        ],
    )
    .await;
    let token = app.admin_token().await;
    (app, token)
}

fn flow_with(credential: Value) -> Value {
    json!({
        "name": "warned",
        "upstream": {"url": "http://127.0.0.1:9/api/v1/run/x", "credential": credential},
    })
}

async fn flows_warn_about_missing_credentials_and_variables(backend: Backend) {
    let (app, token) = start(backend).await;
    let session = app.as_session(&token);

    // A Langfuse credential never stored: saved, with one warning.
    let created = expect(
        session
            .post_json(
                "/api/v1/flows/",
                &flow_with(json!({"provider": "langfuse", "as": "basic"})),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["name"], "warned", "the flow fields are unchanged");
    assert!(created["id"].is_string());
    let warnings = created["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{created}");
    assert_eq!(warnings[0]["code"], "credential_missing");
    assert_eq!(warnings[0]["provider"], "langfuse");
    assert!(warnings[0]["detail"].as_str().unwrap().contains("langfuse"));
    let id = created["id"].as_str().unwrap().to_string();

    // Reads do not carry warnings; the list and the flow are as before.
    let read = expect(
        session.get(&format!("/api/v1/flows/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert!(read.get("warnings").is_none(), "{read}");

    // A Credential variable that does not exist.
    let updated = expect(
        session
            .patch_json(
                &format!("/api/v1/flows/{id}"),
                &json!({"upstream": {"url": "http://127.0.0.1:9/run",
                    "credential": {"variable": "NO_SUCH_VAR"}}}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let warnings = updated["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{updated}");
    assert_eq!(warnings[0]["code"], "variable_missing");
    assert_eq!(warnings[0]["variable"], "NO_SUCH_VAR");

    // A Generic variable of that name is not a Credential either.
    let generic = expect(
        session
            .post_json(
                "/api/v1/variables/",
                &json!({"name": "NO_SUCH_VAR", "value": "plain", "type": "Generic"}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    let renamed = expect(
        session
            .patch_json(
                &format!("/api/v1/flows/{id}"),
                &json!({"name": "still warned"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        renamed["warnings"][0]["code"], "variable_not_credential",
        "{renamed}"
    );

    // Once it is a Credential variable, no warning.
    let var_id = generic["id"].as_str().unwrap();
    expect(
        session
            .patch_json(
                &format!("/api/v1/variables/{var_id}"),
                &json!({"type": "Credential", "value": "now-secret"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let fine = expect(
        session
            .patch_json(&format!("/api/v1/flows/{id}"), &json!({"name": "fine"}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(fine["warnings"], json!([]), "{fine}");

    // A stored provider credential: no warning; no credential at all: none.
    expect(
        session
            .put_json(
                "/api/v1/providers/generic",
                &json!({"secret_key": "generic-0123456789"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let stored = expect(
        session
            .post_json("/api/v1/flows/", &flow_with(json!({"provider": "generic"})))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(stored["warnings"], json!([]));
    let bare = expect(
        session
            .post_json("/api/v1/flows/", &json!({"name": "bare"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(bare["warnings"], json!([]));

    // Another user's credential does not count for this one.
    let (_, other) = app.create_user(&token, "other").await;
    let theirs = expect(
        app.as_session(&other)
            .post_json("/api/v1/flows/", &flow_with(json!({"provider": "generic"})))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(theirs["warnings"][0]["code"], "credential_missing");
}

async fn the_session_answer_carries_expiry_and_auto_login(backend: Backend) {
    let (app, token) = start(backend).await;
    let session = expect(
        app.as_session(&token).get("/api/v1/session").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(session["user"]["username"], ADMIN);
    assert_eq!(session["auto_login"], false);
    let expires = chrono::DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap())
        .expect("expires_at is RFC 3339");
    let left = expires.signed_duration_since(chrono::Utc::now());
    // The default lifetime is 12 hours from sign-in.
    assert!(
        left > chrono::Duration::hours(11) && left <= chrono::Duration::hours(12),
        "{left}"
    );

    // Signed out: a 401 as before, or with ?optional=true an answer that
    // says so (and whether auto-login is on) without being an error.
    let plain = app.anon().get("/api/v1/session").await;
    expect(plain, StatusCode::UNAUTHORIZED).await;
    let optional = expect(
        app.anon().get("/api/v1/session?optional=true").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        optional,
        json!({"csrf_token": null, "user": null, "expires_at": null, "auto_login": false})
    );
    // A stale session is still refused, so the page can say it ended.
    let stale = app
        .as_session("not-a-session-token")
        .get("/api/v1/session?optional=true")
        .await;
    expect(stale, StatusCode::UNAUTHORIZED).await;
}

#[actix_web::test]
async fn the_signed_out_session_answer_says_when_auto_login_is_on() {
    let app = TestApp::start_with(Backend::Sqlite, &[("KEYGATE_AUTO_LOGIN", "true")]).await;
    let optional = expect(
        app.anon().get("/api/v1/session?optional=true").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(optional["auto_login"], true);
    assert_eq!(optional["user"], Value::Null);
}

#[actix_web::test]
async fn a_refused_connection_names_the_port() {
    let (app, token) = start(Backend::Sqlite).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = expect(
        app.as_session(&token)
            .put_json(
                "/api/v1/providers/langfuse",
                &json!({"secret_key": "sk-lf-x-0123456789", "public_key": "pk-lf-x",
                        "host": format!("http://127.0.0.1:{closed}")}),
            )
            .await,
        StatusCode::BAD_GATEWAY,
    )
    .await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("127.0.0.1:{closed}")), "{detail}");
}
