//! The OpenAPI document at `/api/v1/openapi.json`: served without
//! credentials, OpenAPI 3.1.0, with the four security schemes, and (the
//! drift guard) describing exactly the routes the server registers, each
//! of which is really routed.

use std::collections::BTreeSet;

use keygate::routing::{self, RouteEntry};
use keygate::server;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp};

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (method, path) the document describes.
fn documented(doc: &Value) -> BTreeSet<RouteEntry> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                routes.insert((method.clone(), path.clone()));
            }
        }
    }
    routes
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    &doc["paths"][path][method]
}

#[actix_web::test]
async fn the_document_is_served_without_credentials_as_openapi_3_1() {
    let app = TestApp::start(Backend::Sqlite).await;
    let res = app.anon().get("/api/v1/openapi.json").await;
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc = expect(res, StatusCode::OK).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "keygate");
    assert_eq!(doc, server::openapi_document());
    // Operation ids are unique.
    let mut ids = BTreeSet::new();
    for (method, path) in documented(&doc) {
        let id = operation(&doc, &method, &path)["operationId"]
            .as_str()
            .expect("operationId")
            .to_string();
        assert!(ids.insert(id.clone()), "{id} is used twice");
    }
}

#[actix_web::test]
async fn the_four_security_schemes_are_described_and_used() {
    let doc = server::openapi_document();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["api_key_header"],
        json!({"type": "apiKey", "in": "header", "name": "x-api-key",
               "description": schemes["api_key_header"]["description"]})
    );
    assert_eq!(schemes["api_key_query"]["type"], "apiKey");
    assert_eq!(schemes["api_key_query"]["in"], "query");
    assert_eq!(schemes["api_key_query"]["name"], "x-api-key");
    assert_eq!(schemes["session_bearer"]["type"], "http");
    assert_eq!(schemes["session_bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session_cookie"]["type"], "apiKey");
    assert_eq!(schemes["session_cookie"]["in"], "cookie");
    assert_eq!(schemes["session_cookie"]["name"], "keygate_session");
    assert_eq!(schemes.as_object().unwrap().len(), 4);

    let accepted = |method: &str, path: &str| -> BTreeSet<String> {
        operation(&doc, method, path)["security"]
            .as_array()
            .map(|options| {
                options
                    .iter()
                    .flat_map(|o| o.as_object().unwrap().keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let all: BTreeSet<String> = [
        "api_key_header",
        "api_key_query",
        "session_bearer",
        "session_cookie",
    ]
    .map(String::from)
    .into();
    assert_eq!(accepted("get", "/api/v1/flows"), all);
    assert_eq!(accepted("get", "/api/v1/users/whoami"), all);
    assert_eq!(
        accepted("delete", "/api/v1/api_key"),
        ["session_bearer", "session_cookie"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        accepted("post", "/api/v1/run/{flow}"),
        ["api_key_header", "api_key_query"].map(String::from).into()
    );
    for (method, path) in [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/login"),
        ("post", "/api/v1/api_key/revoke-leaked"),
    ] {
        assert!(
            accepted(method, path).is_empty(),
            "{method} {path} is public"
        );
    }
    // Every scheme an operation names is one of the four.
    for (method, path) in documented(&doc) {
        for scheme in accepted(&method, &path) {
            assert!(all.contains(&scheme), "{method} {path}: {scheme}");
        }
    }
}

/// A concrete path for a documented pattern.
fn concrete(path: &str) -> String {
    path.replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{provider}", "generic")
        .replace("{flow}", "no-such-flow")
}

#[actix_web::test]
async fn the_document_describes_exactly_the_registered_routes() {
    let app = TestApp::start(Backend::Sqlite).await;
    let doc = server::openapi_document();
    let registered = routing::registered(server::configure(app.state()));
    let documented = documented(&doc);
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && unregistered.is_empty(),
        "registered but not in the OpenAPI document (add #[utoipa::path] to the handler and \
         list it in src/openapi.rs): {undocumented:?}; documented but not registered: \
         {unregistered:?}"
    );
    // The record matches what is served: every route answers something
    // other than the fallback's 404 or a 405.
    for (method, path) in &registered {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let res = app.anon().send(method.clone(), &concrete(path)).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["detail"] == "Not Found"),
            "{method} {path} is not routed"
        );
    }
    // The fallback itself is recognisable, so the probe above means something.
    let res = app.anon().get("/api/v1/no-such-route").await;
    let body = expect(res, StatusCode::NOT_FOUND).await;
    assert_eq!(body["detail"], "Not Found");
}
