//! The edge of the service: which hosts it answers, throttling of invalid
//! keys per client address, slow request bodies, and what reaches the log.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{expect, Backend, RequestHelper, TestApp};

/// The headers every answer carries, refusals included.
fn assert_security_headers(res: &reqwest::Response) {
    let headers = res.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers.contains_key("content-security-policy"));
}

async fn with_host(app: &TestApp, path: &str, host: &str) -> reqwest::Response {
    app.anon()
        .request(Method::GET, path)
        .header("host", host)
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_loopback_keygate_answers_only_loopback_hosts() {
    let app = TestApp::start(Backend::Sqlite).await;
    for path in ["/health", "/api/v1/users/whoami", "/", "/api/v1/auto_login"] {
        let res = with_host(&app, path, "rebind.attacker.example").await;
        assert_security_headers(&res);
        let body = expect(res, StatusCode::BAD_REQUEST).await;
        assert_eq!(body, serde_json::json!({"detail": "Host not allowed"}));
    }
    let port = app.base.rsplit(':').next().unwrap().to_string();
    for host in [
        format!("localhost:{port}"),
        "LocalHost".to_string(),
        format!("127.0.0.1:{port}"),
        format!("127.9.8.7:{port}"),
        format!("[::1]:{port}"),
    ] {
        let res = with_host(&app, "/health", &host).await;
        expect(res, StatusCode::OK).await;
    }
}

#[actix_web::test]
async fn a_host_list_is_all_that_is_answered() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[("KEYGATE_ALLOWED_HOSTS", "Keygate.Example, 10.1.2.3")],
    )
    .await;
    expect(
        with_host(&app, "/health", "keygate.example:443").await,
        StatusCode::OK,
    )
    .await;
    expect(
        with_host(&app, "/health", "10.1.2.3:7860").await,
        StatusCode::OK,
    )
    .await;
    // Loopback is not implied once hosts are listed.
    expect(app.anon().get("/health").await, StatusCode::BAD_REQUEST).await;
    expect(
        with_host(&app, "/health", "evil.keygate.example").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

async fn auto_login(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.anon().request(Method::GET, "/api/v1/auto_login");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[actix_web::test]
async fn auto_login_answers_only_a_named_host_and_the_same_origin() {
    let app = TestApp::start_with(Backend::Sqlite, &[("KEYGATE_AUTO_LOGIN", "true")]).await;
    let origin = app.base.clone();
    // The DNS-rebinding attack of the issue: foreign Host, matching Origin.
    let rebind = auto_login(
        &app,
        &[
            ("host", "rebind.attacker.example"),
            ("origin", "http://rebind.attacker.example"),
        ],
    )
    .await;
    assert!(rebind.headers().get("set-cookie").is_none());
    expect(rebind, StatusCode::BAD_REQUEST).await;

    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", "null")],
    ] {
        let res = auto_login(&app, &headers).await;
        assert!(res.headers().get("set-cookie").is_none());
        let body: Value = expect(res, StatusCode::FORBIDDEN).await;
        assert!(
            body["detail"].as_str().unwrap().contains("cross-site"),
            "{body}"
        );
    }
    for headers in [
        vec![],
        vec![
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
    ] {
        let res = auto_login(&app, &headers).await;
        expect(res, StatusCode::OK).await;
    }
}

#[actix_web::test]
async fn every_host_allowed_still_keeps_auto_login_to_named_hosts() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[
            ("KEYGATE_AUTO_LOGIN", "true"),
            ("KEYGATE_ALLOWED_HOSTS", "*"),
        ],
    )
    .await;
    expect(
        with_host(&app, "/health", "anything.example").await,
        StatusCode::OK,
    )
    .await;
    let res = auto_login(&app, &[]).await;
    let body = expect(res, StatusCode::FORBIDDEN).await;
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("KEYGATE_ALLOWED_HOSTS"));
}
