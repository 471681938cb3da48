//! The gateway: runs forwarded to a recording fake upstream, on both
//! backends.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::upstream::FakeUpstream;
use crate::common::{expect, Backend, Caller, RequestHelper, TestApp};

crate::on_both_backends!(
    cached_flows_never_outlive_a_change,
    the_credential_is_injected_and_the_callers_key_is_not_forwarded,
    variables_and_basic_auth_inject_as_configured,
    body_query_and_content_type_arrive_intact,
    server_sent_events_arrive_incrementally,
    the_callers_disconnect_cancels_the_upstream_request,
    unreachable_upstream_is_502_and_slow_upstream_is_504,
    upstream_statuses_pass_through_and_missing_upstream_is_422,
    another_users_flow_is_404_and_endpoint_names_resolve,
    flow_bound_keys_run_their_flow_and_nothing_else,
    public_flows_run_without_a_key_until_a_bound_key_exists,
    runs_are_counted_through_the_batched_usage_path,
    private_upstreams_are_refused_unless_allowed,
    run_paths_resolve_as_routes_do,
    upstream_connections_are_reused_and_a_closed_one_replaced,
);

const ALLOW_PRIVATE: (&str, &str) = ("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true");

async fn start(backend: Backend) -> TestApp {
    TestApp::start_with(backend, &[ALLOW_PRIVATE]).await
}

/// Creates a flow with a session token; returns its JSON.
pub async fn create_flow(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app
        .as_session(token)
        .post_json("/api/v1/flows/", &body)
        .await;
    expect(res, StatusCode::CREATED).await
}

/// A caller with the key in the header, or without credentials.
fn caller<'a>(app: &'a TestApp, key: Option<&'a str>) -> Caller<'a> {
    match key {
        Some(key) => app.as_key(key),
        None => app.anon(),
    }
}

/// A run request for a flow id or endpoint name, with the key in the
/// header, to add to before sending.
fn run_request(app: &TestApp, flow: &str, key: Option<&str>) -> reqwest::RequestBuilder {
    caller(app, key)
        .request(Method::POST, &format!("/api/v1/run/{flow}"))
        .json(&json!({"inputs": {"input_value": "hi"}, "tweaks": {}}))
}

/// Runs a flow (by id or endpoint name), with the key in the header.
async fn run(app: &TestApp, flow: &str, key: Option<&str>) -> reqwest::Response {
    run_request(app, flow, key).send().await.unwrap()
}

pub async fn store_generic_secret(app: &TestApp, token: &str, secret: &str, public: Option<&str>) {
    let mut body = json!({"secret_key": secret});
    if let Some(public) = public {
        body["public_key"] = json!(public);
    }
    let res = app
        .as_session(token)
        .post_json("/api/v1/providers/generic", &body)
        .await;
    assert!(
        res.status().is_success(),
        "store credential: {}",
        res.status()
    );
}

async fn the_credential_is_injected_and_the_callers_key_is_not_forwarded(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let token = app.admin_token().await;
    let secret = "upstream-secret-0123456789";
    store_generic_secret(&app, &token, secret, None).await;
    let flow = create_flow(
        &app,
        &token,
        json!({
            "name": "langflow",
            "upstream": {
                "url": upstream.url("/api/v1/run/remote-flow"),
                "credential": {"provider": "generic", "as": "header", "header": "x-api-key"}
            }
        }),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;
    let id = flow["id"].as_str().unwrap();

    // Key in the header, with a cookie and a session header that must stay.
    let res = run_request(&app, id, Some(&key))
        .header("cookie", "keygate_session=abc")
        .header("x-forwarded-for", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let text = res.text().await.unwrap();
    assert!(text.contains("hello from upstream"));
    assert!(!text.contains(secret));
    let got = upstream.next_request().await;
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/api/v1/run/remote-flow");
    assert_eq!(got.header("x-api-key"), Some(secret));
    assert_eq!(got.header("cookie"), None);
    assert_eq!(got.header("authorization"), None);
    assert_eq!(got.header("x-forwarded-for"), None);
    assert!(!got.everything().contains(&key));

    // Key in the query: removed from the forwarded query.
    let res = app
        .anon()
        .post_json(
            &format!("/api/v1/run/{id}?x-api-key={key}&stream=false"),
            &json!({"inputs": {}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let got = upstream.next_request().await;
    assert_eq!(got.query, "stream=false");
    assert_eq!(got.header("x-api-key"), Some(secret));
    assert!(!got.everything().contains(&key));

    // Langflow's older route does the same.
    let res = app
        .as_key(&key)
        .post_json(&format!("/api/v1/process/{id}"), &json!({"inputs": {}}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        upstream.next_request().await.header("x-api-key"),
        Some(secret)
    );
}

async fn variables_and_basic_auth_inject_as_configured(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let token = app.admin_token().await;
    let res = app
        .as_session(&token)
        .post_json(
            "/api/v1/variables/",
            &json!({"name": "LANGFLOW_PROD_KEY", "value": "var-secret-abcdef", "type": "Credential"}),
        )
        .await;
    assert!(res.status().is_success(), "variable: {}", res.status());
    store_generic_secret(&app, &token, "basic-secret", Some("basic-public")).await;
    let bearer = create_flow(
        &app,
        &token,
        json!({"name": "bearer", "upstream": {"url": upstream.url("/bearer"),
            "credential": {"variable": "LANGFLOW_PROD_KEY", "as": "bearer"}}}),
    )
    .await;
    let basic = create_flow(
        &app,
        &token,
        json!({"name": "basic", "upstream": {"url": upstream.url("/basic"), "method": "put",
            "credential": {"provider": "generic", "as": "basic"}}}),
    )
    .await;
    let missing = create_flow(
        &app,
        &token,
        json!({"name": "missing", "upstream": {"url": upstream.url("/missing"),
            "credential": {"variable": "NOT_THERE", "as": "bearer"}}}),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;

    let res = run(&app, bearer["id"].as_str().unwrap(), Some(&key)).await;
    expect(res, StatusCode::OK).await;
    let got = upstream.next_request().await;
    assert_eq!(
        got.header("authorization"),
        Some("Bearer var-secret-abcdef")
    );

    let res = run(&app, basic["id"].as_str().unwrap(), Some(&key)).await;
    expect(res, StatusCode::OK).await;
    let got = upstream.next_request().await;
    assert_eq!(got.method, "PUT");
    // base64("basic-public:basic-secret")
    assert_eq!(
        got.header("authorization"),
        Some("Basic YmFzaWMtcHVibGljOmJhc2ljLXNlY3JldA==")
    );

    let res = run(&app, missing["id"].as_str().unwrap(), Some(&key)).await;
    let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("NOT_THERE"));
    assert!(upstream.received_nothing());
}

async fn body_query_and_content_type_arrive_intact(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let token = app.admin_token().await;
    let flow = create_flow(
        &app,
        &token,
        json!({"name": "echo", "upstream": {"url": upstream.url("/api/v1/run/x?fixed=1")}}),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;
    let body =
        r#"{"inputs": {"input_value": "héllo", "n": [1, 2.5e3]}, "tweaks": {"A-1": {"t": 0.2}}}"#;
    let res = app
        .anon()
        .request(
            Method::POST,
            &format!(
                "/api/v1/run/{}?stream=false&q=a%20b+c&x-api-key={key}",
                flow["id"].as_str().unwrap()
            ),
        )
        .header("content-type", "application/json; charset=utf-8")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    let got = upstream.next_request().await;
    assert_eq!(got.body, body.as_bytes());
    assert_eq!(got.query, "fixed=1&stream=false&q=a%20b+c");
    assert_eq!(
        got.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(got.header("accept"), Some("application/json"));
}

async fn server_sent_events_arrive_incrementally(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let token = app.admin_token().await;
    create_flow(
        &app,
        &token,
        json!({"name": "stream", "endpoint_name": "streamer", "upstream": {"url": upstream.url("/sse")}}),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;
    let mut res = app
        .as_key(&key)
        .post_json("/api/v1/run/streamer?stream=true", &json!({"inputs": {}}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(upstream.next_request().await.query, "stream=true");
    // The upstream holds back its last event until we have the first.
    let mut seen = String::new();
    while !seen.contains("data: first\n\n") {
        let chunk = res.chunk().await.unwrap().expect("stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("last"));
    upstream.release();
    while let Some(chunk) = res.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(seen, "data: first\n\ndata: last\n\n");
}

async fn the_callers_disconnect_cancels_the_upstream_request(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let token = app.admin_token().await;
    let flow = create_flow(
        &app,
        &token,
        json!({"name": "hang", "upstream": {"url": upstream.url("/hang")}}),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;
    // A client of its own, so closing its connection is certain.
    let client = reqwest::Client::new();
    let mut res = app
        .as_key(&key)
        .with_client(&client)
        .post_json(
            &format!("/api/v1/run/{}", flow["id"].as_str().unwrap()),
            &json!({"inputs": {}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let first = res.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    upstream.next_request().await;
    drop(res);
    drop(client);
    assert_eq!(upstream.next_closed().await, "hang");

    // Gone before the upstream answered at all: also cancelled.
    let slow = create_flow(
        &app,
        &token,
        json!({"name": "slow", "upstream": {"url": upstream.url("/slow")}}),
    )
    .await;
    let request = app
        .as_key(&key)
        .with_client(&reqwest::Client::new())
        .request(
            Method::POST,
            &format!("/api/v1/run/{}", slow["id"].as_str().unwrap()),
        )
        .json(&json!({"inputs": {}}));
    let call = actix_web::rt::spawn(async move { request.send().await });
    assert_eq!(upstream.next_request().await.path, "/slow");
    call.abort();
    assert_eq!(upstream.next_closed().await, "slow");
}

async fn unreachable_upstream_is_502_and_slow_upstream_is_504(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = TestApp::start_with(
        backend,
        &[ALLOW_PRIVATE, ("KEYGATE_UPSTREAM_TIMEOUT_MS", "300")],
    )
    .await;
    let token = app.admin_token().await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let secret = "never-shown-secret-42";
    store_generic_secret(&app, &token, secret, None).await;
    let down = create_flow(
        &app,
        &token,
        json!({"name": "down", "upstream": {"url": format!("http://127.0.0.1:{closed_port}/run"),
            "credential": {"provider": "generic", "as": "bearer"}}}),
    )
    .await;
    let slow = create_flow(
        &app,
        &token,
        json!({"name": "slow", "upstream": {"url": upstream.url("/slow")}}),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;

    let res = run(&app, down["id"].as_str().unwrap(), Some(&key)).await;
    let body = expect(res, StatusCode::BAD_GATEWAY).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("connect"), "{detail}");
    assert!(!detail.contains(secret) && !detail.contains(&key));

    let res = run(&app, slow["id"].as_str().unwrap(), Some(&key)).await;
    let body = expect(res, StatusCode::GATEWAY_TIMEOUT).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("timed out after 300 ms"), "{detail}");
    // keygate hung up on the upstream.
    assert_eq!(upstream.next_closed().await, "slow");
}

async fn upstream_statuses_pass_through_and_missing_upstream_is_422(backend: Backend) {
    let upstream = FakeUpstream::start();
    let app = start(backend).await;
    let token = app.admin_token().await;
    let teapot = create_flow(
        &app,
        &token,
        json!({"name": "teapot", "upstream": {"url": upstream.url("/status/418")}}),
    )
    .await;
    let bare = create_flow(&app, &token, json!({"name": "no upstream"})).await;
    let (_, key) = app.create_key(&token, "script").await;
    let res = run(&app, teapot["id"].as_str().unwrap(), Some(&key)).await;
    assert_eq!(res.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "upstream said 418");

    let res = run(&app, bare["id"].as_str().unwrap(), Some(&key)).await;
    let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("no upstream"));
}

async fn another_users_flow_is_404_and_endpoint_names_resolve(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let admin = app.admin_token().await;
    let (_, alice) = app.create_user(&admin, "alice").await;
    let (_, bob) = app.create_user(&admin, "bob").await;
    let alices = create_flow(
        &app,
        &alice,
        json!({"name": "a", "endpoint_name": "shared-name", "upstream": {"url": upstream.url("/alice")}}),
    )
    .await;
    create_flow(
        &app,
        &bob,
        json!({"name": "b", "endpoint_name": "shared-name", "upstream": {"url": upstream.url("/bob")}}),
    )
    .await;
    let (_, alice_key) = app.create_key(&alice, "a").await;
    let (_, bob_key) = app.create_key(&bob, "b").await;

    // The same endpoint name resolves among the key owner's flows.
    expect(
        run(&app, "shared-name", Some(&alice_key)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(upstream.next_request().await.path, "/alice");
    expect(
        run(&app, "shared-name", Some(&bob_key)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(upstream.next_request().await.path, "/bob");

    // Alice's flow id with Bob's key: 404, exactly like an unknown id.
    let id = alices["id"].as_str().unwrap();
    let body = expect(run(&app, id, Some(&bob_key)).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body["detail"], format!("Flow identifier {id} not found"));
    let unknown = uuid::Uuid::new_v4().to_string();
    let body = expect(
        run(&app, &unknown, Some(&bob_key)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        body["detail"],
        format!("Flow identifier {unknown} not found")
    );
    expect(
        run(&app, "no-such-name", Some(&bob_key)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(upstream.received_nothing());
}

async fn flow_bound_keys_run_their_flow_and_nothing_else(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let admin = app.admin_token().await;
    let (_, alice) = app.create_user(&admin, "alice").await;
    let mine = create_flow(
        &app,
        &alice,
        json!({"name": "bound", "endpoint_name": "bound", "upstream": {"url": upstream.url("/bound")}}),
    )
    .await;
    let other = create_flow(
        &app,
        &alice,
        json!({"name": "other", "endpoint_name": "other", "upstream": {"url": upstream.url("/other")}}),
    )
    .await;
    let admins_flow = create_flow(&app, &admin, json!({"name": "admin's"})).await;
    let mine_id = mine["id"].as_str().unwrap();

    let res = app
        .as_session(&alice)
        .post_json(
            "/api/v1/api_key/",
            &json!({"name": "client-1", "flow_id": mine_id}),
        )
        .await;
    let created = expect(res, StatusCode::OK).await;
    assert_eq!(created["flow_id"], mine_id);
    let bound_key = created["api_key"].as_str().unwrap().to_string();
    let bound_id = created["id"].as_str().unwrap().to_string();

    // Its own flow, by id and by endpoint name, header or query.
    expect(run(&app, mine_id, Some(&bound_key)).await, StatusCode::OK).await;
    assert_eq!(upstream.next_request().await.path, "/bound");
    let res = app
        .anon()
        .post_json(
            &format!("/api/v1/run/bound?x-api-key={bound_key}"),
            &json!({}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(upstream.next_request().await.path, "/bound");

    // Any other flow, its owner's or not: 404.
    for flow in [
        other["id"].as_str().unwrap(),
        "other",
        admins_flow["id"].as_str().unwrap(),
    ] {
        let body = expect(
            run(&app, flow, Some(&bound_key)).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(body["detail"], format!("Flow identifier {flow} not found"));
    }
    assert!(upstream.received_nothing());

    // Every other route: 403, and it cannot manage keys.
    let forbidden = json!({"detail": "This API key is bound to one flow and can only run it"});
    for (method, path) in [
        ("GET", "/api/v1/users/whoami".to_string()),
        ("GET", "/api/v1/api_key/".to_string()),
        ("POST", "/api/v1/api_key/".to_string()),
        ("DELETE", format!("/api/v1/api_key/{bound_id}")),
        ("PATCH", format!("/api/v1/api_key/{bound_id}")),
        ("GET", "/api/v1/flows/".to_string()),
        ("POST", "/api/v1/flows/".to_string()),
        ("GET", format!("/api/v1/flows/{mine_id}")),
        ("PATCH", format!("/api/v1/flows/{mine_id}")),
        ("DELETE", format!("/api/v1/flows/{mine_id}")),
        ("GET", "/api/v1/variables/".to_string()),
        ("GET", "/api/v1/providers/".to_string()),
        ("GET", "/api/v1/users/".to_string()),
    ] {
        let res = app
            .as_key(&bound_key)
            .send_json(method.parse().unwrap(), &path, &json!({}))
            .await;
        let body = expect(res, StatusCode::FORBIDDEN).await;
        assert_eq!(body, forbidden, "{method} {path}");
    }

    // Binding needs a flow of the caller's own.
    for flow_id in [
        admins_flow["id"].as_str().unwrap().to_string(),
        uuid::Uuid::new_v4().to_string(),
    ] {
        let res = app
            .as_session(&alice)
            .post_json("/api/v1/api_key/", &json!({"flow_id": flow_id}))
            .await;
        expect(res, StatusCode::NOT_FOUND).await;
    }
    let res = app
        .as_session(&alice)
        .post_json("/api/v1/api_key/", &json!({"flow_id": "not-a-uuid"}))
        .await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Deleting the flow deletes its bound keys.
    let res = app
        .as_session(&alice)
        .delete(&format!("/api/v1/flows/{mine_id}"))
        .await;
    expect(res, StatusCode::OK).await;
    let keys = expect(
        app.as_session(&alice).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(keys["total_count"], 0);
    let res = run(&app, mine_id, Some(&bound_key)).await;
    expect(res, StatusCode::UNAUTHORIZED).await;
}

async fn public_flows_run_without_a_key_until_a_bound_key_exists(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let admin = app.admin_token().await;
    let (_, alice) = app.create_user(&admin, "alice").await;
    let public = create_flow(
        &app,
        &alice,
        json!({"name": "pub", "endpoint_name": "open-flow", "access": "public",
               "upstream": {"url": upstream.url("/public")}}),
    )
    .await;
    assert_eq!(public["access"], "public");
    let private = create_flow(
        &app,
        &alice,
        json!({"name": "priv", "endpoint_name": "closed-flow", "upstream": {"url": upstream.url("/private")}}),
    )
    .await;
    assert_eq!(private["access"], "private");
    let public_id = public["id"].as_str().unwrap();

    // No key: the public flow runs, by id or endpoint name.
    for flow in [public_id, "open-flow"] {
        expect(run(&app, flow, None).await, StatusCode::OK).await;
        let got = upstream.next_request().await;
        assert_eq!(got.path, "/public");
        assert_eq!(got.header("x-api-key"), None);
    }
    // The private one asks for a key, as does an unknown flow.
    for flow in [
        private["id"].as_str().unwrap(),
        "closed-flow",
        "nothing-here",
    ] {
        let body = expect(run(&app, flow, None).await, StatusCode::UNAUTHORIZED).await;
        assert!(body["detail"].as_str().unwrap().contains("x-api-key"));
    }
    assert!(upstream.received_nothing());

    // A script that always sends its own key may still run someone else's
    // public flow (never their private one).
    let (_, bob) = app.create_user(&admin, "bob").await;
    let (_, bob_key) = app.create_key(&bob, "bob").await;
    expect(run(&app, "open-flow", Some(&bob_key)).await, StatusCode::OK).await;
    let got = upstream.next_request().await;
    assert_eq!(got.path, "/public");
    assert_eq!(got.header("x-api-key"), None);
    expect(
        run(&app, "closed-flow", Some(&bob_key)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(upstream.received_nothing());

    // An active flow-bound key makes the public flow require a key.
    let res = app
        .as_session(&alice)
        .post_json(
            "/api/v1/api_key/",
            &json!({"name": "client", "flow_id": public_id}),
        )
        .await;
    let created = expect(res, StatusCode::OK).await;
    let bound_key = created["api_key"].as_str().unwrap().to_string();
    let bound_id = created["id"].as_str().unwrap().to_string();
    expect(run(&app, public_id, None).await, StatusCode::UNAUTHORIZED).await;
    expect(run(&app, public_id, Some(&bound_key)).await, StatusCode::OK).await;
    upstream.next_request().await;

    // Deactivated, it no longer counts.
    let res = app
        .as_session(&alice)
        .patch_json(
            &format!("/api/v1/api_key/{bound_id}"),
            &json!({"is_active": false}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    expect(run(&app, public_id, None).await, StatusCode::OK).await;
    upstream.next_request().await;

    // Back to private: a key is needed again.
    let res = app
        .as_session(&alice)
        .patch_json(
            &format!("/api/v1/flows/{public_id}"),
            &json!({"access": "private"}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    expect(run(&app, public_id, None).await, StatusCode::UNAUTHORIZED).await;
    assert!(upstream.received_nothing());
}

async fn runs_are_counted_through_the_batched_usage_path(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let token = app.admin_token().await;
    let flow = create_flow(
        &app,
        &token,
        json!({"name": "count", "upstream": {"url": upstream.url("/count")}}),
    )
    .await;
    let (key_id, key) = app.create_key(&token, "script").await;
    for _ in 0..3 {
        expect(
            run(&app, flow["id"].as_str().unwrap(), Some(&key)).await,
            StatusCode::OK,
        )
        .await;
        upstream.next_request().await;
    }
    // Nothing written yet: the counts wait in memory for the flusher.
    assert_eq!(app.state().usage.pending_keys(), 1);
    let list = expect(
        app.as_session(&token).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let listed = list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["total_uses"], 3);
    assert!(listed["last_used_at"].is_string());
}

async fn private_upstreams_are_refused_unless_allowed(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let port = upstream.base.rsplit(':').next().unwrap().to_string();
    // A literal loopback address is refused when the flow is saved.
    for url in [
        upstream.url("/x"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        format!("http://[::1]:{port}/"),
    ] {
        let res = app
            .as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "ssrf", "upstream": {"url": url}}),
            )
            .await;
        let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(body["detail"].as_str().unwrap().contains("upstream.url"));
    }
    // A name that resolves to loopback is refused when the run connects.
    let flow = create_flow(
        &app,
        &token,
        json!({"name": "sneaky", "upstream": {"url": format!("http://localhost:{port}/x")}}),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;
    let res = run(&app, flow["id"].as_str().unwrap(), Some(&key)).await;
    let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["detail"].as_str().unwrap().contains("private"));
    assert!(upstream.received_nothing());
}

/// The real binary at debug level: neither the caller's key (header or
/// query) nor the injected secret reaches the log, whatever the outcome.
#[actix_web::test]
async fn logs_never_hold_the_callers_key_or_the_injected_secret() {
    use crate::common::{base_env, TestDb, ADMIN, ADMIN_PASSWORD};
    let mut upstream = FakeUpstream::start();
    let db = TestDb::new(Backend::Sqlite);
    let mut env = base_env(&db);
    env.insert("KEYGATE_LOG".into(), "debug".into());
    env.insert(ALLOW_PRIVATE.0.into(), ALLOW_PRIVATE.1.into());
    env.insert("KEYGATE_UPSTREAM_TIMEOUT_MS".into(), "300".into());
    let served = crate::ops::Served::start(&env);
    let token = served.login(ADMIN, ADMIN_PASSWORD).await;
    let admin = served.as_session(&token);
    let secret = "injected-secret-for-the-log-test";
    let res = admin
        .post_json("/api/v1/providers/generic", &json!({"secret_key": secret}))
        .await;
    assert!(res.status().is_success());
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut flows = Vec::new();
    for url in [
        upstream.url("/ok"),
        upstream.url("/status/500"),
        upstream.url("/slow"),
        format!("http://127.0.0.1:{closed_port}/"),
    ] {
        let res = admin
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "f", "upstream": {"url": url,
                    "credential": {"provider": "generic", "as": "bearer"}}}),
            )
            .await;
        flows.push(
            expect(res, StatusCode::CREATED).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let res = admin
        .post_json("/api/v1/api_key/", &json!({"name": "log test"}))
        .await;
    let key = expect(res, StatusCode::OK).await["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = [
        StatusCode::OK,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::GATEWAY_TIMEOUT,
        StatusCode::BAD_GATEWAY,
    ];
    for (flow, status) in flows.iter().zip(expected) {
        for in_query in [false, true] {
            let path = format!("/api/v1/run/{flow}");
            let request = if in_query {
                // The key first, then stream=false: `?x-api-key=…&stream=false`.
                served
                    .as_key_in_query(&key)
                    .request(Method::POST, &path)
                    .query(&[("stream", "false")])
            } else {
                served.as_key(&key).request(Method::POST, &path)
            };
            let res = request.json(&json!({"inputs": {}})).send().await.unwrap();
            assert_eq!(res.status(), status);
            let body = res.text().await.unwrap();
            assert!(!body.contains(secret) && !body.contains(&key), "{body}");
        }
    }
    let got = upstream.next_request().await;
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );
    let (_, log) = served.terminate();
    assert!(log.contains("/api/v1/run/"), "{log}");
    assert!(!log.contains(&key), "the caller's key appeared in the log");
    assert!(
        !log.contains(secret),
        "the injected secret appeared in the log"
    );
}

async fn cached_flows_never_outlive_a_change(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let token = app.admin_token().await;
    let (_, key) = app.create_key(&token, "runner").await;
    let flow = create_flow(
        &app,
        &token,
        json!({"name": "cached", "endpoint_name": "cached", "upstream": {"url": upstream.url("/first")}}),
    )
    .await;
    let id = flow["id"].as_str().unwrap().to_string();
    let lookups = app.state().flows.database_lookups();
    for _ in 0..3 {
        expect(run(&app, "cached", Some(&key)).await, StatusCode::OK).await;
        assert_eq!(upstream.next_request().await.path, "/first");
    }
    assert_eq!(
        app.state().flows.database_lookups(),
        lookups + 1,
        "three runs of one flow read it from the database once"
    );
    // A changed upstream is used by the very next run.
    let res = app
        .as_session(&token)
        .patch_json(
            &format!("/api/v1/flows/{id}"),
            &json!({"upstream": {"url": upstream.url("/second")}}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    let lookups = app.state().flows.database_lookups();
    expect(run(&app, "cached", Some(&key)).await, StatusCode::OK).await;
    assert_eq!(upstream.next_request().await.path, "/second");
    assert_eq!(
        app.state().flows.database_lookups(),
        lookups + 1,
        "the change evicted the cached flow"
    );
    // A renamed endpoint stops answering under the old name.
    let res = app
        .as_session(&token)
        .patch_json(
            &format!("/api/v1/flows/{id}"),
            &json!({"endpoint_name": "renamed"}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    expect(run(&app, "cached", Some(&key)).await, StatusCode::NOT_FOUND).await;
    // A deleted flow is gone at once.
    let res = app
        .as_session(&token)
        .delete(&format!("/api/v1/flows/{id}"))
        .await;
    expect(res, StatusCode::OK).await;
    expect(
        run(&app, "renamed", Some(&key)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect(run(&app, &id, Some(&key)).await, StatusCode::NOT_FOUND).await;
    assert!(upstream.received_nothing());
}

/// The run routes are matched by comparing strings: each form of the path
/// reaches its route, anything else under `/api/v1/run` is the API's 404,
/// another method a 405 (both JSON), before the key or the body is read.
async fn run_paths_resolve_as_routes_do(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = start(backend).await;
    let admin = app.admin_token().await;
    create_flow(
        &app,
        &admin,
        json!({"name": "a", "endpoint_name": "my-flow", "upstream": {"url": upstream.url("/plain")}}),
    )
    .await;
    let (_, key) = app.create_key(&admin, "k").await;

    for path in ["/api/v1/run/my%2Dflow", "/api/v1/run/my%2Dflow/"] {
        let res = app
            .as_key(&key)
            .request(Method::POST, path)
            .json(&json!({"inputs": {}}))
            .send()
            .await
            .unwrap();
        expect(res, StatusCode::OK).await;
        assert_eq!(upstream.next_request().await.path, "/plain", "{path}");
    }
    // The advanced run of a flow with a single upstream URL is refused by
    // the gateway itself: the path reached the advanced route.
    let res = app
        .as_key(&key)
        .request(Method::POST, "/api/v1/run/advanced/my%2Dflow/")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("/api/v1/run/advanced needs"),
        "{body}"
    );
    for path in [
        "/api/v1/run/",
        "/api/v1/run",
        "/api/v1/run/a/b",
        "/api/v1/run/advanced/a/b",
        "/api/v1/run//",
    ] {
        let res = app.anon().request(Method::POST, path).send().await.unwrap();
        let body = expect(res, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "Not Found", "{path}");
    }
    for path in ["/api/v1/run/my%2Dflow", "/api/v1/run/advanced/my%2Dflow"] {
        let res = app.anon().request(Method::GET, path).send().await.unwrap();
        let body = expect(res, StatusCode::METHOD_NOT_ALLOWED).await;
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    assert!(upstream.received_nothing());
}

/// A minimal HTTP/1.1 upstream on a raw socket: answers every request
/// with a small JSON body, keeps the connection open, except that the
/// answer to request number `close_after` says `Connection: close` and the
/// connection ends there. Reports (connection number, Host, User-Agent)
/// per request.
fn counting_upstream(
    close_after: usize,
) -> (u16, std::sync::mpsc::Receiver<(usize, String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (report, reports) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut served = 0;
        for (connection, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            loop {
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    headers.push(line.trim_end().to_string());
                }
                if headers.is_empty() {
                    break;
                }
                let header = |name: &str| {
                    headers
                        .iter()
                        .find_map(|h| {
                            let (n, v) = h.split_once(':')?;
                            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let length: usize = header("content-length").parse().unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                served += 1;
                report
                    .send((connection, header("host"), header("user-agent")))
                    .unwrap();
                let close = served == close_after;
                let answer = br#"{"outputs": []}"#;
                write!(
                    writer,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
                    answer.len(),
                    if close { "connection: close\r\n" } else { "" }
                )
                .unwrap();
                writer.write_all(answer).unwrap();
                if close {
                    break;
                }
            }
        }
    });
    (port, reports)
}

async fn upstream_connections_are_reused_and_a_closed_one_replaced(backend: Backend) {
    let app = start(backend).await;
    let token = app.admin_token().await;
    let (port, reports) = counting_upstream(2);
    let flow = create_flow(
        &app,
        &token,
        json!({"name": "pooled", "upstream": {"url": format!("http://127.0.0.1:{port}/run")}}),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;
    let id = flow["id"].as_str().unwrap();

    let mut seen = Vec::new();
    for _ in 0..3 {
        let res = run(&app, id, Some(&key)).await;
        assert_eq!(expect(res, StatusCode::OK).await, json!({"outputs": []}));
        seen.push(reports.recv().unwrap());
    }
    // The first two on one connection; the upstream closed it with the
    // second answer, so the third went on a new one and still succeeded.
    let connections: Vec<usize> = seen.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(connections, [0, 0, 1]);
    for (_, host, agent) in &seen {
        assert_eq!(host, &format!("127.0.0.1:{port}"));
        assert!(agent.starts_with("keygate/"), "{agent}");
    }
}
