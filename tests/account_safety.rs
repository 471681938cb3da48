//! Account safety on both backends: sign-in throttling, password changes
//! that need the person (a session and the current password), revoking
//! all of one's keys, a superuser's incident response, and cross-site
//! sign-in refused.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp, ADMIN, ADMIN_PASSWORD};

crate::on_both_backends!(
    failed_sign_ins_are_throttled_per_username,
    a_successful_sign_in_resets_the_username,
    failed_sign_ins_are_throttled_per_address,
    cross_site_sign_in_and_sign_out_are_refused,
);

const LOGIN: &str = "/api/v1/login";

/// Signs in with the form; returns the answer's status and body.
async fn try_login(app: &TestApp, username: &str, password: &str) -> (StatusCode, Value) {
    let res = app
        .anon()
        .post_form(LOGIN, &[("username", username), ("password", password)])
        .await;
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

/// Expects the throttle's 429 with a `Retry-After` of at least a second.
async fn expect_throttled(res: reqwest::Response) {
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After on a throttled sign-in")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = expect(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        body["detail"],
        "Too many failed sign-in attempts; try again later"
    );
}

async fn failed_sign_ins_are_throttled_per_username(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_LOGIN_MAX_FAILURES", "2")]).await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "ann").await;
    let wrong = try_login(&app, "ann", "not-anns-password").await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    let wrong_json = app
        .anon()
        .post_json(LOGIN, &json!({"username": "ann", "password": "nope-nope"}))
        .await;
    let unknown = try_login(&app, "nobody", "whatever-password").await;
    assert_eq!(
        expect(wrong_json, StatusCode::UNAUTHORIZED).await,
        unknown.1,
        "a wrong password and an unknown user are answered alike"
    );
    // Now even the right password waits: a 429 that does not say whether
    // it was right.
    let right = app
        .anon()
        .post_form(LOGIN, &[("username", "ann"), ("password", "ann-password")])
        .await;
    expect_throttled(right).await;
    let json_right = app
        .anon()
        .post_json(
            LOGIN,
            &json!({"username": "ann", "password": "ann-password"}),
        )
        .await;
    expect_throttled(json_right).await;
    // Unknown usernames are counted the same way.
    assert_eq!(
        try_login(&app, "nobody", "whatever-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    let res = app
        .anon()
        .post_form(LOGIN, &[("username", "nobody"), ("password", "x")])
        .await;
    expect_throttled(res).await;
    // Other users are not affected.
    app.login(ADMIN, ADMIN_PASSWORD).await;
}

async fn a_successful_sign_in_resets_the_username(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_LOGIN_MAX_FAILURES", "2")]).await;
    for _ in 0..3 {
        let (status, _) = try_login(&app, ADMIN, "a-wrong-password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        app.login(ADMIN, ADMIN_PASSWORD).await;
    }
}

async fn failed_sign_ins_are_throttled_per_address(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        &[
            ("KEYGATE_LOGIN_MAX_FAILURES", "10"),
            ("KEYGATE_LOGIN_MAX_ADDRESS_FAILURES", "3"),
        ],
    )
    .await;
    // A success does not count against the address.
    app.login(ADMIN, ADMIN_PASSWORD).await;
    for name in ["u1", "u2", "u3"] {
        let (status, _) = try_login(&app, name, "guess-password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let res = app
        .anon()
        .post_form(LOGIN, &[("username", ADMIN), ("password", ADMIN_PASSWORD)])
        .await;
    expect_throttled(res).await;
}

async fn cross_site_sign_in_and_sign_out_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let form = [("username", ADMIN), ("password", ADMIN_PASSWORD)];
    let own_origin = app.base.clone();
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://attacker.example"),
        ("origin", "null"),
    ] {
        let res = app
            .anon()
            .request(reqwest::Method::POST, LOGIN)
            .header(name, value)
            .form(&form)
            .send()
            .await
            .unwrap();
        let body = expect(res, StatusCode::FORBIDDEN).await;
        assert_eq!(
            body["detail"],
            "Signing in or out from another site is not allowed; use keygate's own page"
        );
    }
    // The page itself (same origin) and scripts (no such headers) sign in.
    let res = app
        .anon()
        .request(reqwest::Method::POST, LOGIN)
        .header("origin", &own_origin)
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    let token = expect(res, StatusCode::OK).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .as_cookie(&token)
        .request(reqwest::Method::POST, "/api/v1/logout")
        .header("origin", "https://attacker.example")
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::FORBIDDEN).await;
    let whoami = app.as_session(&token).get("/api/v1/users/whoami").await;
    expect(whoami, StatusCode::OK).await;
    let res = app.as_cookie(&token).post("/api/v1/logout").await;
    expect(res, StatusCode::OK).await;
    let whoami = app.as_session(&token).get("/api/v1/users/whoami").await;
    expect(whoami, StatusCode::UNAUTHORIZED).await;
}
