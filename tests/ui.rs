//! The settings UI as served by the binary, its security headers, CSRF
//! protection of cookie sessions, and auto-login. The page itself is
//! driven in a real browser by `tests/browser/`.

use reqwest::header::{HeaderMap, CONTENT_TYPE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp, ADMIN, ADMIN_PASSWORD};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn assert_security_headers(headers: &HeaderMap, what: &str) {
    let get = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(get("content-security-policy"), CSP, "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("cache-control"), "no-store", "{what}");
}

/// Signs in with the form; returns (session token, CSRF token).
async fn sign_in(app: &TestApp) -> (String, String) {
    let body = app.login_answer(ADMIN, ADMIN_PASSWORD).await;
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["csrf_token"].as_str().unwrap().to_string(),
    )
}

fn cookie(token: &str) -> String {
    format!("keygate_session={token}")
}

#[actix_web::test]
async fn the_page_and_its_assets_are_served_with_their_types() {
    let app = TestApp::start(Backend::Sqlite).await;
    for (path, content_type, marker) in [
        ("/", "text/html", "<script src=\"/ui/app.js\""),
        (
            "/index.html",
            "text/html",
            "<link rel=\"stylesheet\" href=\"/ui/app.css\">",
        ),
        ("/ui/app.js", "text/javascript", "X-CSRF-Token"),
        ("/ui/app.css", "text/css", ".one-time"),
    ] {
        let res = app.anon().get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let ct = res.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(ct.starts_with(content_type), "{path}: {ct}");
        assert!(ct.contains("charset=utf-8"), "{path}: {ct}");
        assert_security_headers(res.headers(), path);
        let text = res.text().await.unwrap();
        assert!(text.contains(marker), "{path} lacks {marker}");
    }
}

#[test]
fn the_page_has_no_inline_code_and_fetches_nothing_from_elsewhere() {
    let html = keygate::ui::INDEX_HTML;
    for script in html.match_indices("<script").map(|(i, _)| &html[i..]) {
        let tag = &script[..script.find('>').unwrap()];
        assert!(tag.contains("src=\"/ui/"), "inline script: {tag}");
        assert!(script[tag.len()..].starts_with("></script>"));
    }
    assert!(!html.contains("<style"), "inline style element");
    for source in [html, keygate::ui::APP_JS, keygate::ui::APP_CSS] {
        assert!(!source.contains("style=\""), "inline style attribute");
        assert!(!source.contains("http://") && !source.contains("https://cdn"));
        assert!(!source.contains("@import") && !source.contains("url("));
    }
    let attributes = regex_like_event_handlers(html);
    assert!(attributes.is_empty(), "inline handlers: {attributes:?}");
    // User data goes in as text: the script never parses strings as HTML.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!keygate::ui::APP_JS.contains(sink), "app.js uses {sink}");
    }
}

/// ` onclick=`-style attributes in markup.
fn regex_like_event_handlers(html: &str) -> Vec<String> {
    html.split(|c: char| c.is_whitespace())
        .filter(|word| {
            word.starts_with("on")
                && word.contains('=')
                && word[2..word.find('=').unwrap()]
                    .chars()
                    .all(|c| c.is_ascii_lowercase())
        })
        .map(str::to_string)
        .collect()
}

#[actix_web::test]
async fn every_api_answer_carries_the_security_headers() {
    let app = TestApp::start(Backend::Sqlite).await;
    let unauthenticated = app.anon().get("/api/v1/users/whoami").await;
    assert_security_headers(unauthenticated.headers(), "401");
    expect(unauthenticated, StatusCode::UNAUTHORIZED).await;

    let bad_key = app.as_key("sk-nope").get("/api/v1/api_key/").await;
    assert_security_headers(bad_key.headers(), "bad key");
    assert_eq!(bad_key.status(), StatusCode::UNAUTHORIZED);

    let missing = app.anon().get("/no/such/page").await;
    assert_security_headers(missing.headers(), "404");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let (token, csrf) = sign_in(&app).await;
    let created = app
        .as_cookie(&token)
        .with_csrf(&csrf)
        .post_json("/api/v1/api_key/", &json!({"name": "shown once"}))
        .await;
    assert_security_headers(created.headers(), "key creation");
    let body = expect(created, StatusCode::OK).await;
    assert!(body["api_key"].as_str().unwrap().starts_with("sk-"));
}

#[actix_web::test]
async fn cookie_sessions_need_the_csrf_token_to_change_state() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (token, csrf) = sign_in(&app).await;
    assert_eq!(csrf.len(), 64);
    let by_cookie = app.as_cookie(&token);

    // The page learns the token from the session too.
    let session = by_cookie.get("/api/v1/session").await;
    let session = expect(session, StatusCode::OK).await;
    assert_eq!(session["csrf_token"], csrf.as_str());
    assert_eq!(session["user"]["username"], ADMIN);
    assert_eq!(session["user"]["is_superuser"], true);

    // Reading needs no token.
    let list = by_cookie.get("/api/v1/api_key/").await;
    expect(list, StatusCode::OK).await;

    // A browser (it sends Origin or Sec-Fetch-Site) changing state with the
    // cookie alone, or a wrong token, is refused before the handler runs.
    for (sent, browser_header) in [
        (None, ("origin", "http://evil.example")),
        (None, ("sec-fetch-site", "cross-site")),
        (Some("0".repeat(64)), ("origin", "http://evil.example")),
        (Some(format!("{csrf}x")), ("sec-fetch-site", "same-origin")),
    ] {
        let caller = match &sent {
            Some(value) => by_cookie.with_csrf(value),
            None => by_cookie,
        };
        let req = caller
            .request(Method::POST, "/api/v1/api_key/")
            .header(browser_header.0, browser_header.1)
            .json(&json!({"name": "forged"}));
        let body = expect(req.send().await.unwrap(), StatusCode::FORBIDDEN).await;
        assert_eq!(body["detail"], "Missing or invalid CSRF token", "{sent:?}");
    }
    let keys: Value = app
        .as_session(&token)
        .get("/api/v1/api_key/")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["total_count"], 0, "a refused request created a key");

    // A script keeping a cookie jar (no Origin, no Sec-Fetch-*) is not a
    // browser page and needs no token, as with Langflow.
    let script = by_cookie
        .post_json("/api/v1/api_key/", &json!({"name": "cookie-jar script"}))
        .await;
    let script_key = expect(script, StatusCode::OK).await;
    let script_key_id = script_key["id"].as_str().unwrap().to_string();
    let res = app
        .as_session(&token)
        .delete(&format!("/api/v1/api_key/{script_key_id}"))
        .await;
    expect(res, StatusCode::OK).await;

    // With the token it works; so do bearer sessions and keys without one.
    let from_the_page = by_cookie.with_csrf(&csrf);
    let ok = from_the_page
        .request(Method::POST, "/api/v1/api_key/")
        .header("origin", app.base.as_str())
        .json(&json!({"name": "from the page"}))
        .send()
        .await
        .unwrap();
    let created = expect(ok, StatusCode::OK).await;
    let key = created["api_key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let by_bearer = app
        .as_session(&token)
        .post_json("/api/v1/api_key/", &json!({"name": "script"}))
        .await;
    expect(by_bearer, StatusCode::OK).await;
    let by_key = app
        .as_key(&key)
        .post_json("/api/v1/api_key/", &json!({"name": "from a key"}))
        .await;
    expect(by_key, StatusCode::OK).await;

    // DELETE and PATCH are guarded the same way.
    let delete = by_cookie
        .request(Method::DELETE, &format!("/api/v1/api_key/{id}"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    expect(delete, StatusCode::FORBIDDEN).await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    let delete = from_the_page.delete(&format!("/api/v1/api_key/{id}")).await;
    expect(delete, StatusCode::OK).await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::UNAUTHORIZED);

    // A key has no session to describe.
    let (_, other_key) = app.create_key(&token, "other").await;
    let res = app.as_key(&other_key).get("/api/v1/session").await;
    expect(res, StatusCode::BAD_REQUEST).await;

    // Signing in again and out stay possible with the cookie alone.
    let relogin = by_cookie
        .post_form(
            "/api/v1/login",
            &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
        )
        .await;
    expect(relogin, StatusCode::OK).await;
    let logout = by_cookie.post("/api/v1/logout").await;
    expect(logout, StatusCode::OK).await;
    let after = by_cookie.get("/api/v1/session").await;
    expect(after, StatusCode::UNAUTHORIZED).await;
}

#[actix_web::test]
async fn auto_login_is_off_by_default() {
    let app = TestApp::start(Backend::Sqlite).await;
    let res = app.anon().get("/api/v1/auto_login").await;
    assert!(res.headers().get(SET_COOKIE).is_none());
    let body = expect(res, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("disabled"));
}

#[actix_web::test]
async fn auto_login_opens_a_superuser_session_but_the_api_still_needs_credentials() {
    let app = TestApp::start_with(Backend::Sqlite, &[("KEYGATE_AUTO_LOGIN", "true")]).await;
    let anonymous = app.anon().get("/api/v1/users/whoami").await;
    expect(anonymous, StatusCode::UNAUTHORIZED).await;

    let res = app.anon().get("/api/v1/auto_login").await;
    let set_cookie = res.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert_security_headers(res.headers(), "auto_login");
    let body = expect(res, StatusCode::OK).await;
    let token = body["access_token"].as_str().unwrap();
    assert!(set_cookie.starts_with(&cookie(token)));

    let session = app.as_cookie(token).get("/api/v1/session").await;
    let session = expect(session, StatusCode::OK).await;
    assert_eq!(session["user"]["username"], ADMIN);
    assert_eq!(session["user"]["is_superuser"], true);
    assert_eq!(session["csrf_token"], body["csrf_token"]);
}
