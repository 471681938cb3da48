//! Operating keygate: request ids, JSON logs, Prometheus metrics and the
//! graceful shutdown, against the in-process server and the real binary.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::upstream::FakeUpstream;
use crate::common::{expect, Backend, RequestHelper, TestApp, TestDb, ADMIN, ADMIN_PASSWORD};
use crate::ops::{binary_env, Served};

crate::on_both_backends!(
    request_ids_are_kept_or_made_returned_and_forwarded,
    json_logs_are_one_object_per_line_and_never_hold_a_key,
    metrics_on_the_main_listener_are_for_superusers_and_count_what_happens,
    sigterm_drains_finishes_runs_in_flight_and_writes_usage,
);

/// Bounds every poll; never used to order events.
const PATIENCE: Duration = Duration::from_secs(20);

fn request_id(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on the answer from {}", res.url()))
        .to_str()
        .unwrap()
        .to_string()
}

fn is_uuid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok() && text.len() == 36
}

async fn request_ids_are_kept_or_made_returned_and_forwarded(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = TestApp::start_with(backend, &[("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true")]).await;
    let token = app.admin_token().await;
    let (_, key) = app.create_key(&token, "ids").await;
    let with_id = |path: &str, id: &str| {
        app.anon()
            .request(Method::GET, path)
            .header("x-request-id", id)
    };

    // The caller's sane id comes back, on success, errors and 404s alike.
    for (path, status) in [
        ("/health", StatusCode::OK),
        ("/no/such/route", StatusCode::NOT_FOUND),
        ("/api/v1/users/whoami", StatusCode::UNAUTHORIZED),
    ] {
        let res = with_id(path, "caller-id-123").send().await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(request_id(&res), "caller-id-123", "{path}");
    }
    // Without one, or with one that is not sane, a new UUID.
    let generated = request_id(&app.anon().get("/no/such/route").await);
    assert!(is_uuid(&generated), "{generated}");
    let too_long = "x".repeat(129);
    for bad in [too_long.as_str(), "two words", &key] {
        let res = with_id("/health", bad).send().await.unwrap();
        let id = request_id(&res);
        assert!(is_uuid(&id), "{bad:?} was answered with {id:?}");
    }
    let res = app
        .anon()
        .request(Method::GET, "/health")
        .header("x-request-id", &b"caf\xc3\xa9"[..])
        .send()
        .await
        .unwrap();
    assert!(is_uuid(&request_id(&res)));
    // Two answers never share a generated id.
    assert_ne!(
        request_id(&app.anon().get("/health").await),
        request_id(&app.anon().get("/health").await)
    );

    // A run forwards the id to the upstream: the caller's, or the one made.
    expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "ids", "endpoint_name": "ids", "upstream": {"url": upstream.url("/run")}}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    let run = |id: Option<&str>| {
        let request = app
            .as_key(&key)
            .request(Method::POST, "/api/v1/run/ids")
            .json(&json!({"input_value": "hi"}));
        match id {
            Some(id) => request.header("x-request-id", id),
            None => request,
        }
    };
    let res = run(Some("run-42")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(request_id(&res), "run-42");
    assert_eq!(
        upstream.next_request().await.header("x-request-id"),
        Some("run-42")
    );
    let res = run(None).send().await.unwrap();
    let made = request_id(&res);
    assert!(is_uuid(&made));
    let received = upstream.next_request().await;
    assert_eq!(received.header("x-request-id"), Some(made.as_str()));
    assert_eq!(
        received
            .headers
            .iter()
            .filter(|(name, _)| name == "x-request-id")
            .count(),
        1
    );
}

/// The access log lines of a JSON log, by request id.
fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"))
        })
        .filter(|line| line["target"] == "keygate::access")
        .collect()
}

async fn json_logs_are_one_object_per_line_and_never_hold_a_key(backend: Backend) {
    let db = TestDb::new(backend);
    let mut env = binary_env(&db);
    env.insert("KEYGATE_LOG_FORMAT".into(), "json".into());
    let served = Served::start(&env);
    let token = served.login(ADMIN, ADMIN_PASSWORD).await;
    let created = expect(
        served
            .as_session(&token)
            .post_json("/api/v1/api_key/", &json!({"name": "logged"}))
            .await,
        StatusCode::OK,
    )
    .await;
    let key = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_str().unwrap().to_string();
    let user_id = expect(
        served.as_key(&key).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let in_header = served
        .as_key(&key)
        .request(Method::GET, "/api/v1/users/whoami")
        .header("x-request-id", "from-header")
        .send()
        .await
        .unwrap();
    assert_eq!(in_header.status(), StatusCode::OK);
    let in_query = served
        .as_key_in_query(&key)
        .request(Method::GET, "/api/v1/users/whoami")
        .header("x-request-id", "from-query")
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), StatusCode::OK);
    // A key in the path and one sent as the request id are hidden too.
    let res = served
        .anon()
        .request(Method::POST, &format!("/api/v1/run/{key}"))
        .header("x-request-id", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (_, log) = served.terminate();

    // No key, nor any piece of it past the public prefix (sk- and 5 more).
    assert!(!log.contains(&key), "a key appeared in the log");
    let secret_part: Vec<char> = key.chars().skip(8).collect();
    for piece in secret_part.windows(10) {
        let piece: String = piece.iter().collect();
        assert!(
            !log.contains(&piece),
            "a piece of the key ({piece}) is in the log"
        );
    }
    assert!(!log.contains(ADMIN_PASSWORD));

    let mut saw_listening = false;
    for line in log.lines() {
        // One key per field: the event's fields never shadow the line's.
        assert!(
            line.matches("\"target\":").count() <= 1,
            "two targets in {line}"
        );
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(json[field].is_string(), "no {field} in {line}");
        }
        saw_listening |= json["message"] == "keygate is listening";
    }
    assert!(saw_listening);

    let access = access_lines(&log);
    for line in &access {
        for field in ["request_id", "method", "route", "uri"] {
            assert!(line[field].is_string(), "no {field} in {line}");
        }
        assert!(
            line["status"].is_u64() && line["latency_us"].is_u64(),
            "{line}"
        );
        assert_eq!(line["message"], "request");
    }
    for id in ["from-header", "from-query"] {
        let line = access
            .iter()
            .find(|line| line["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}"));
        assert_eq!(line["route"], "/api/v1/users/whoami");
        assert_eq!(line["status"], 200);
        assert_eq!(line["user_id"], user_id.as_str());
        assert_eq!(line["key_id"], key_id.as_str());
    }
    let redacted = access
        .iter()
        .find(|line| line["request_id"] == "from-query")
        .unwrap();
    assert!(redacted["uri"]
        .as_str()
        .unwrap()
        .contains("x-api-key=REDACTED"));
    let path_key = access
        .iter()
        .find(|line| line["method"] == "POST" && line["status"] == 401)
        .expect("the refused run is logged");
    assert_eq!(path_key["route"], "/api/v1/run/{flow}");
    assert!(is_uuid(path_key["request_id"].as_str().unwrap()));
    // A signed-in session names its user, and no key.
    let session_line = access
        .iter()
        .find(|line| line["route"] == "/api/v1/api_key/" && line["method"] == "POST")
        .expect("the key creation is logged");
    assert_eq!(session_line["user_id"], user_id.as_str());
    assert!(session_line.get("key_id").is_none());
}

/// Scrapes `/metrics` with `caller`'s credentials.
async fn scrape(res: reqwest::Response) -> String {
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"));
    text
}

/// The value of the sample `name{labels}` (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

async fn metrics_on_the_main_listener_are_for_superusers_and_count_what_happens(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = TestApp::start_with(
        backend,
        &[
            ("KEYGATE_METRICS", "true"),
            ("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true"),
            ("KEYGATE_LOGIN_MAX_FAILURES", "1"),
        ],
    )
    .await;
    let admin = app.admin_token().await;
    let (_, user) = app.create_user(&admin, "metrics-user").await;

    // Who may scrape: superusers only.
    expect(app.anon().get("/metrics").await, StatusCode::UNAUTHORIZED).await;
    expect(
        app.as_session(&user).get("/metrics").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let read_only = expect(
        app.as_session(&admin)
            .post_json("/api/v1/api_key/", &json!({"scopes": ["read"]}))
            .await,
        StatusCode::OK,
    )
    .await;
    let read_only = read_only["api_key"].as_str().unwrap().to_string();
    expect(
        app.as_key(&read_only).get("/metrics").await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Key verifications by outcome.
    let (key_id, key) = app.create_key(&admin, "counted").await;
    for _ in 0..3 {
        assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    }
    assert_eq!(
        app.whoami_status("not-a-key").await,
        StatusCode::UNAUTHORIZED
    );
    let unknown = format!("sk-{}", "A".repeat(43));
    assert_eq!(app.whoami_status(&unknown).await, StatusCode::UNAUTHORIZED);
    let res = app
        .as_key(&read_only)
        .post_json("/api/v1/api_key/", &json!({}))
        .await;
    expect(res, StatusCode::FORBIDDEN).await;
    let elsewhere = expect(
        app.as_session(&admin)
            .post_json(
                "/api/v1/api_key/",
                &json!({"allowed_ips": ["127.0.0.2/32"]}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let elsewhere = elsewhere["api_key"].as_str().unwrap().to_string();
    assert_eq!(app.whoami_status(&elsewhere).await, StatusCode::FORBIDDEN);
    let (inactive_id, inactive) = app.create_key(&admin, "inactive").await;
    expect(
        app.as_session(&admin)
            .patch_json(
                &format!("/api/v1/api_key/{inactive_id}"),
                &json!({"is_active": false}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.whoami_status(&inactive).await, StatusCode::UNAUTHORIZED);
    // A revoked key (known to this instance, then deleted) and a key
    // rotated away with no grace (expired).
    let (revoked_id, revoked) = app.create_key(&admin, "revoked").await;
    assert_eq!(app.whoami_status(&revoked).await, StatusCode::OK);
    expect(
        app.as_session(&admin)
            .delete(&format!("/api/v1/api_key/{revoked_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.whoami_status(&revoked).await, StatusCode::UNAUTHORIZED);
    let (rotated_id, rotated) = app.create_key(&admin, "rotated").await;
    expect(
        app.as_session(&admin)
            .post_json(
                &format!("/api/v1/api_key/{rotated_id}/rotate"),
                &json!({"grace_seconds": 0}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.whoami_status(&rotated).await, StatusCode::UNAUTHORIZED);

    // Sign-ins: a failure, then the back-off.
    for expected in [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS] {
        let res = app
            .anon()
            .post_form(
                "/api/v1/login",
                &[("username", "nobody"), ("password", "wrong-password")],
            )
            .await;
        assert_eq!(res.status(), expected);
    }

    // Gateway calls by flow endpoint name.
    for (name, path) in [("fine", "/run"), ("broken", "/status/503")] {
        expect(
            app.as_session(&admin)
                .post_json(
                    "/api/v1/flows/",
                    &json!({"name": name, "endpoint_name": name, "upstream": {"url": upstream.url(path)}}),
                )
                .await,
            StatusCode::CREATED,
        )
        .await;
        let res = app
            .as_key(&key)
            .post_json(&format!("/api/v1/run/{name}"), &json!({}))
            .await;
        assert!(res.status() == StatusCode::OK || res.status() == StatusCode::SERVICE_UNAVAILABLE);
        upstream.next_request().await;
    }
    expect(
        app.anon().get("/no/such/route").await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let text = scrape(app.as_session(&admin).get("/metrics").await).await;
    let outcome = |name: &str| {
        sample(
            &text,
            &format!("keygate_key_verifications_total{{outcome=\"{name}\"}}"),
        )
    };
    // whoami ×3 with `key` (×4 with the revoked key's first) and the runs; the read-only key's scrape and
    // refused POST are valid / missing_scope.
    assert!(outcome("valid") >= 5.0, "{text}");
    assert_eq!(outcome("malformed"), 1.0);
    assert_eq!(outcome("unknown"), 1.0);
    assert_eq!(outcome("revoked"), 1.0, "{text}");
    assert_eq!(outcome("missing_scope"), 1.0);
    assert_eq!(outcome("forbidden_address"), 1.0);
    assert_eq!(outcome("inactive"), 1.0, "{text}");
    assert_eq!(outcome("expired"), 1.0);
    assert!(text.contains("keygate_key_verifications_total{outcome=\"rate_limited\"} 0"));

    let whoami =
        "keygate_http_requests_total{method=\"GET\",route=\"/api/v1/users/whoami\",status=\"200\"}";
    assert_eq!(sample(&text, whoami), 4.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "keygate_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/users/whoami\",status=\"200\"}"
        ),
        4.0
    );
    assert_eq!(
        sample(
            &text,
            "keygate_http_requests_total{method=\"PATCH\",route=\"/api/v1/api_key/{id}\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "keygate_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    // Never a raw path, an id or a key in a label.
    assert!(!text.contains(&inactive_id) && !text.contains(&key_id));
    assert!(!text.contains("/no/such/route"));
    for secret in [&key, &read_only, &elsewhere, &inactive] {
        assert!(!text.contains(&secret[8..]));
    }

    assert_eq!(
        sample(&text, "keygate_signins_total{outcome=\"failure\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "keygate_signins_total{outcome=\"throttled\"}"),
        1.0
    );
    assert!(sample(&text, "keygate_signins_total{outcome=\"success\"}") >= 2.0);

    assert!(
        sample(
            &text,
            "keygate_cache_lookups_total{cache=\"keys\",result=\"hit\"}"
        ) >= 2.0
    );
    assert!(
        sample(
            &text,
            "keygate_cache_lookups_total{cache=\"keys\",result=\"miss\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "keygate_cache_lookups_total{cache=\"flows\",result=\"miss\"}"
        ) >= 2.0
    );

    assert_eq!(sample(&text, "keygate_db_pool_max_connections"), 4.0);
    assert!(text.contains("keygate_db_pool_connections{state=\"in_use\"}"));
    assert!(sample(&text, "keygate_db_pool_wait_seconds_count") >= 1.0);

    assert_eq!(
        sample(
            &text,
            "keygate_upstream_requests_total{flow=\"fine\",status=\"2xx\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "keygate_upstream_requests_total{flow=\"broken\",status=\"5xx\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "keygate_upstream_duration_seconds_count{flow=\"fine\"}"
        ),
        1.0
    );
}

#[actix_web::test]
async fn metrics_are_off_unless_asked_for() {
    let app = TestApp::start(Backend::Sqlite).await;
    let token = app.admin_token().await;
    let res = app.as_session(&token).get("/metrics").await;
    assert_eq!(
        expect(res, StatusCode::NOT_FOUND).await,
        json!({"detail": "Not Found"})
    );
    assert!(app.metrics_base().is_none());
}

#[actix_web::test]
async fn metrics_on_their_own_listener_are_served_only_there() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[
            ("KEYGATE_METRICS", "true"),
            ("KEYGATE_METRICS_ADDR", "127.0.0.1:0"),
        ],
    )
    .await;
    let token = app.admin_token().await;
    let res = app.as_session(&token).get("/metrics").await;
    expect(res, StatusCode::NOT_FOUND).await;
    let base = app.metrics_base().expect("a metrics listener");
    let client = reqwest::Client::new();
    let text = scrape(client.get(format!("{base}/metrics")).send().await.unwrap()).await;
    // The main listener's requests are counted, the scrape itself is not.
    assert_eq!(
        sample(
            &text,
            "keygate_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"404\"}"
        ),
        0.0,
        "/metrics is no route of the main listener: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "keygate_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    let other = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(
        expect(other, StatusCode::NOT_FOUND).await,
        json!({"detail": "Not Found"})
    );
}

#[actix_web::test]
async fn invalidations_from_another_instance_are_timed() {
    let first = TestApp::start_with(Backend::Postgres, &[("KEYGATE_METRICS", "true")]).await;
    let second = TestApp::start_on(first.db.alias(), &[("KEYGATE_METRICS", "true")]).await;
    let token = first.admin_token().await;
    let (key_id, _) = first.create_key(&token, "revoked").await;
    expect(
        first
            .as_session(&token)
            .delete(&format!("/api/v1/api_key/{key_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    let admin = second.admin_token().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(second.as_session(&admin).get("/metrics").await).await;
        if sample(&text, "keygate_invalidation_lag_seconds_count") >= 2.0 {
            assert!(text.contains("keygate_invalidation_lag_seconds_bucket{le=\"+Inf\"}"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no invalidation lag observed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sigterm_drains_finishes_runs_in_flight_and_writes_usage(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let db = TestDb::new(backend);
    let mut env = binary_env(&db);
    // Long enough that only the second signal can end it: the test
    // decides when the drain is over.
    env.insert("KEYGATE_SHUTDOWN_DRAIN_SECONDS".into(), "600".into());
    env.insert("KEYGATE_ALLOW_PRIVATE_UPSTREAMS".into(), "true".into());
    let mut served = Served::start(&env);
    let token = served.login(ADMIN, ADMIN_PASSWORD).await;
    let created = expect(
        served
            .as_session(&token)
            .post_json("/api/v1/api_key/", &json!({"name": "drained"}))
            .await,
        StatusCode::OK,
    )
    .await;
    let key = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_str().unwrap().to_string();
    expect(
        served
            .as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "slow", "endpoint_name": "slow", "upstream": {"url": upstream.url("/slow")}}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    expect(served.anon().get("/ready").await, StatusCode::OK).await;
    assert_eq!(
        served
            .as_key(&key)
            .get("/api/v1/users/whoami")
            .await
            .status(),
        StatusCode::OK
    );

    // A run the upstream holds, in flight across the whole shutdown.
    let run_client = reqwest::Client::new();
    let run = tokio::spawn(
        run_client
            .post(format!("{}/api/v1/run/slow", served.base()))
            .header("x-api-key", &key)
            .json(&json!({}))
            .send(),
    );
    upstream.next_request().await;

    served.sigterm();
    let ready = served.anon().url("/ready");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let res = client.get(&ready).send().await.unwrap();
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: Value = res.json().await.unwrap();
            assert_eq!(
                body,
                json!({"status": "not ready", "detail": "shutting down"})
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never answered 503 after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still serving during the drain: liveness and real work.
    expect(served.anon().get("/health").await, StatusCode::OK).await;
    assert_eq!(
        served
            .as_key(&key)
            .get("/api/v1/users/whoami")
            .await
            .status(),
        StatusCode::OK
    );
    assert!(!served.has_exited());

    // The second signal ends the drain: the server stops accepting but
    // waits for the run in flight.
    served.sigterm();
    served.await_log("finishing requests in flight", PATIENCE);
    assert!(!served.has_exited(), "exited with a run in flight");
    upstream.release();
    let answer = run.await.unwrap().expect("the run in flight is answered");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.json::<Value>().await.unwrap(), json!({"late": true}));
    drop((client, run_client));
    let (exit, _, log) = served.wait_for_exit();
    assert!(exit.success(), "keygate exited with {exit}");
    assert!(log.contains("usage counters flushed at shutdown"));

    // Two whoami calls and the run: all written at shutdown.
    use diesel::prelude::*;
    use keygate::db::schema::api_keys;
    let mut conn = db.connect();
    let uses: i64 = api_keys::table
        .find(&key_id)
        .select(api_keys::total_uses)
        .first(&mut conn)
        .unwrap();
    assert_eq!(uses, 3, "every use before and during the drain is written");
}
