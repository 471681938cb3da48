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

crate::on_both_backends!(
    invalid_keys_from_one_address_are_throttled_but_valid_keys_are_served,
    a_stalled_body_gets_408_and_the_connection_is_closed,
);

async fn invalid_keys_from_one_address_are_throttled_but_valid_keys_are_served(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_KEY_FAILURES_PER_MINUTE", "5")]).await;
    let admin = app.admin_token().await;
    let (_, valid) = app.create_key(&admin, "valid").await;
    let unknown = |n: usize| format!("sk-{:0>43}", format!("unknown{n}"));
    for n in 0..3 {
        expect(
            app.as_key(&unknown(n)).get("/api/v1/auth/check").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    // Malformed keys count as well.
    for _ in 0..2 {
        expect(
            app.as_key("sk-short").get("/api/v1/auth/check").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    expect(
        app.as_key(&valid).get("/api/v1/auth/check").await,
        StatusCode::OK,
    )
    .await;

    // The limit is reached: invalid keys of every kind are now 429.
    for key in [
        unknown(0),
        unknown(99),
        "sk-short".to_string(),
        "junk".to_string(),
    ] {
        let res = app.as_key(&key).get("/api/v1/users/whoami").await;
        let retry: u32 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry));
        assert_security_headers(&res);
        let body = expect(res, StatusCode::TOO_MANY_REQUESTS).await;
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("Too many invalid API keys"));
    }
    // Valid keys are still served, the known one and one created just now.
    expect(
        app.as_key(&valid).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await;
    let (_, fresh) = app.create_key(&admin, "fresh").await;
    expect(
        app.as_key(&fresh).get("/api/v1/auth/check").await,
        StatusCode::OK,
    )
    .await;

    // A flood of made-up keys from the throttled address costs only its
    // few lookups, not a query each.
    let before = app.state().keys.database_lookups();
    for n in 100..160 {
        expect(
            app.as_key(&unknown(n)).get("/api/v1/auth/check").await,
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
    }
    let spent = app.state().keys.database_lookups() - before;
    assert!(
        spent <= u64::from(keygate::auth::throttle::THROTTLED_LOOKUPS_PER_MINUTE),
        "{spent} lookups"
    );
    // Sessions and anonymous routes are not affected.
    expect(
        app.as_session(&admin).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await;
}

#[actix_web::test]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    async fn junk_from(app: &TestApp, forwarded_for: &str) -> StatusCode {
        app.as_key("sk-junk")
            .request(Method::GET, "/api/v1/auth/check")
            .header("x-forwarded-for", forwarded_for)
            .send()
            .await
            .unwrap()
            .status()
    }
    // The test client connects from 127.0.0.1, here a trusted proxy: the
    // forwarded address is the client, each with its own count.
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[
            ("KEYGATE_KEY_FAILURES_PER_MINUTE", "2"),
            ("KEYGATE_TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            junk_from(&app, "198.51.100.1").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        junk_from(&app, "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A forged left-most entry changes nothing: the proxy's hop counts.
    assert_eq!(
        junk_from(&app, "203.0.113.9, 198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        junk_from(&app, "198.51.100.2").await,
        StatusCode::UNAUTHORIZED
    );

    // Without trusted proxies the header is ignored: the peer counts.
    let app =
        TestApp::start_with(Backend::Sqlite, &[("KEYGATE_KEY_FAILURES_PER_MINUTE", "2")]).await;
    assert_eq!(
        junk_from(&app, "198.51.100.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        junk_from(&app, "198.51.100.2").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        junk_from(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Sends `head` and `body_part` on a fresh connection, then reads until
/// the server closes it: a body that never completes.
async fn stalled_request(app: &TestApp, head: &str, body_part: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_part.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn a_stalled_body_gets_408_and_the_connection_is_closed(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_BODY_TIMEOUT_MS", "300")]).await;
    let admin = app.admin_token().await;
    let (_, key) = app.create_key(&admin, "slow").await;
    let port = app.base.rsplit(':').next().unwrap();
    for head in [
        // A form body (read as bytes) and a JSON body.
        format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        ),
        format!(
            "POST /api/v1/api_key/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-api-key: {key}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        ),
    ] {
        let answer = stalled_request(&app, &head, "{\"a\"").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains(r#"{"detail":"Request body timed out"}"#),
            "{answer}"
        );
        let lower = answer.to_ascii_lowercase();
        assert!(lower.contains("x-frame-options: deny"), "{answer}");
        assert!(lower.contains("connection: close"), "{answer}");
    }
    // A body that arrives in time is unaffected.
    let res = app
        .anon()
        .post_form(
            "/api/v1/login",
            &[
                ("username", crate::common::ADMIN),
                ("password", crate::common::ADMIN_PASSWORD),
            ],
        )
        .await;
    expect(res, StatusCode::OK).await;
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The real binary on SQLite in its own data directory: everything it
/// creates is the owner's only, and its access log never shows a key,
/// whatever shape the key was sent in.
#[cfg(unix)]
#[actix_web::test]
async fn the_binary_keeps_its_files_private_and_its_log_free_of_keys() {
    use crate::common::{TestDb, ADMIN, ADMIN_PASSWORD};
    use crate::ops::Served;

    let db = TestDb::new(Backend::Sqlite);
    let mut env = crate::common::base_env(&db);
    env.remove("KEYGATE_DATABASE_URL");
    let data = db.dir.join("data");
    let served = Served::start(&env);
    let token = served.login(ADMIN, ADMIN_PASSWORD).await;
    let res = served
        .as_session(&token)
        .post_json("/api/v1/api_key/", &serde_json::json!({"name": "log"}))
        .await;
    let key = expect(res, StatusCode::OK).await["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(mode(&data), 0o700, "data directory");
    for file in [
        "keygate.db",
        "keygate.db-wal",
        "keygate.db-shm",
        "secret.key",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }

    let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
    let tail = &key[3..];
    for target in [
        format!("/api/v1/run/{key}"),
        format!("/api/v1/users/whoami?{key}=1"),
        format!("/api/v1/users/whoami?a=1%26x-api-key%3D{key}"),
        format!("/api/v1/users/whoami?a=%73k-{tail}"),
        format!("/api/v1/users/whoami?a={encoded}"),
        format!("/api/v1/run/{encoded}"),
    ] {
        // Whatever the answers, only the log matters here.
        served.anon().get(&target).await;
    }
    let (_, log) = served.terminate();
    assert!(log.contains("keygate::access"), "the access log is on");
    assert!(log.contains("REDACTED"), "{log}");
    for fragment in [&key[3..15], &key[20..32], &key[key.len() - 10..]] {
        assert!(!log.contains(fragment), "a key fragment reached the log");
        let encoded: String = fragment.bytes().map(|b| format!("%{b:02X}")).collect();
        assert!(!log.contains(&encoded), "an encoded key reached the log");
    }
}
