//! Per-key rate limits (one instance and several on one database) and
//! usage over time.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use keygate::db::schema::{key_usage_hours, rate_limit_windows};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp, TestDb};

crate::on_both_backends!(
    rate_limits_are_set_shown_patched_and_validated,
    a_limited_key_gets_429_with_the_headers,
    a_short_window_opens_again,
    a_limited_key_cannot_give_a_looser_limit,
    the_limit_is_shared_between_instances,
    instances_converge_on_the_limit_by_themselves,
    usage_counts_requests_and_refusals_by_day_and_hour,
    usage_days_are_checked_and_keys_are_private,
    last_used_from_follows_trusted_proxies,
);

const REASON: &str = "x-keygate-reason";
/// A route any key may call, answered from the verification path alone.
const CHECK: &str = "/api/v1/auth/check";

/// Creates a key with the session `token` and `body`; (id, key, answer).
async fn key_with(app: &TestApp, token: &str, body: Value) -> (String, String, Value) {
    let res = app
        .as_session(token)
        .post_json("/api/v1/api_key/", &body)
        .await;
    let created = expect(res, StatusCode::OK).await;
    (
        created["id"].as_str().unwrap().to_string(),
        created["api_key"].as_str().unwrap().to_string(),
        created,
    )
}

/// A window length of about a day whose current window has at least ten
/// minutes left, so a test never straddles two windows.
fn long_window() -> i64 {
    let now = chrono::Utc::now().timestamp();
    (80_000..=86_400).rev().find(|s| s - now % s > 600).unwrap()
}

/// The `RateLimit-*` headers of an answer: (limit, remaining, reset).
fn rate_headers(res: &reqwest::Response) -> Option<(i64, i64, i64)> {
    let get = |name: &str| -> Option<i64> {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().parse().unwrap())
    };
    match (
        get("ratelimit-limit"),
        get("ratelimit-remaining"),
        get("ratelimit-reset"),
    ) {
        (Some(l), Some(r), Some(s)) => Some((l, r, s)),
        (None, None, None) => None,
        partial => panic!("some RateLimit headers only: {partial:?}"),
    }
}

/// Asserts a 429 of the rate limit: body, reason, `Retry-After` equal to
/// the reset, nothing remaining.
async fn assert_rate_limited(res: reqwest::Response, limit: i64) {
    let (l, remaining, reset) = rate_headers(&res).expect("RateLimit headers on a 429");
    assert_eq!((l, remaining), (limit, 0));
    assert_eq!(res.headers()[REASON], "RATE_LIMITED");
    let retry: i64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, reset);
    assert!(retry >= 1);
    let body = expect(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body, json!({"detail": "Rate limit exceeded"}));
}

/// Sends one key request and gives back (status, remaining).
async fn call(app: &TestApp, key: &str) -> (StatusCode, Option<i64>, reqwest::Response) {
    let res = app.as_key(key).get(CHECK).await;
    let remaining = rate_headers(&res).map(|(_, r, _)| r);
    (res.status(), remaining, res)
}

async fn rate_limits_are_set_shown_patched_and_validated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let limit = json!({"requests": 100, "per_seconds": 60});
    let (id, _, created) = key_with(&app, &admin, json!({"rate_limit": limit})).await;
    assert_eq!(created["rate_limit"], limit);
    let (plain_id, _, created) = key_with(&app, &admin, json!({"name": "plain"})).await;
    assert_eq!(created["rate_limit"], Value::Null);
    let list = expect(
        app.as_session(&admin).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    let shown = |list: &Value, id: &str| {
        list["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()["rate_limit"]
            .clone()
    };
    assert_eq!(shown(&list, &id), limit);
    assert_eq!(shown(&list, &plain_id), Value::Null);

    // Bad limits are refused with a clear 422 and change nothing.
    for bad in [
        json!({"requests": 0, "per_seconds": 60}),
        json!({"requests": -1, "per_seconds": 60}),
        json!({"requests": 10, "per_seconds": 0}),
        json!({"requests": 10, "per_seconds": 86_401}),
        json!({"requests": 1_000_000_001, "per_seconds": 60}),
        json!({"requests": 1.5, "per_seconds": 60}),
        json!({"requests": "10", "per_seconds": 60}),
        json!({"requests": 10}),
        json!({"requests": 10, "per_seconds": 60, "burst": 5}),
        json!([10, 60]),
        json!("10/60"),
    ] {
        let res = app
            .as_session(&admin)
            .patch_json(
                &format!("/api/v1/api_key/{id}"),
                &json!({"rate_limit": bad}),
            )
            .await;
        let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            body["detail"].as_str().unwrap().contains("rate_limit"),
            "{bad}: {body}"
        );
        let res = app
            .as_session(&admin)
            .post_json("/api/v1/api_key/", &json!({"rate_limit": bad}))
            .await;
        expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let list = expect(
        app.as_session(&admin).get("/api/v1/api_key/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown(&list, &id), limit);
    assert_eq!(list["total_count"], 2, "no bad create stored a key");

    // The bounds themselves are fine.
    let widest = json!({"requests": 1_000_000_000, "per_seconds": 86_400});
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{plain_id}"),
            &json!({"rate_limit": widest}),
        )
        .await;
    assert_eq!(expect(res, StatusCode::OK).await["rate_limit"], widest);

    // A PATCH without rate_limit keeps it; null removes it.
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{id}"),
            &json!({"name": "renamed"}),
        )
        .await;
    assert_eq!(expect(res, StatusCode::OK).await["rate_limit"], limit);
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{id}"),
            &json!({"rate_limit": {"requests": 5, "per_seconds": 1}}),
        )
        .await;
    assert_eq!(
        expect(res, StatusCode::OK).await["rate_limit"],
        json!({"requests": 5, "per_seconds": 1})
    );

    // Rotation carries the limit over.
    let res = app
        .as_session(&admin)
        .post_json(&format!("/api/v1/api_key/{id}/rotate"), &json!({}))
        .await;
    let rotated = expect(res, StatusCode::OK).await;
    assert_eq!(
        rotated["rate_limit"],
        json!({"requests": 5, "per_seconds": 1})
    );
    let new_key = rotated["api_key"].as_str().unwrap();
    let (status, remaining, _) = call(&app, new_key).await;
    assert_eq!((status, remaining), (StatusCode::OK, Some(4)));

    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{id}"),
            &json!({"rate_limit": null}),
        )
        .await;
    assert_eq!(expect(res, StatusCode::OK).await["rate_limit"], Value::Null);
}

async fn a_limited_key_gets_429_with_the_headers(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let seconds = long_window();
    let (id, key, _) = key_with(
        &app,
        &admin,
        json!({"rate_limit": {"requests": 3, "per_seconds": seconds}}),
    )
    .await;
    let (_, fenced, _) = key_with(
        &app,
        &admin,
        json!({"rate_limit": {"requests": 3, "per_seconds": seconds}, "allowed_ips": ["127.0.0.99/32"]}),
    )
    .await;
    let (_, unlimited, _) = key_with(&app, &admin, json!({})).await;

    for expected in [2, 1, 0] {
        let res = app.as_key(&key).get(CHECK).await;
        let (limit, remaining, reset) = rate_headers(&res).expect("headers on every answer");
        assert_eq!((limit, remaining), (3, expected));
        assert!((1..=seconds).contains(&reset), "{reset}");
        assert!(!res.headers().contains_key(REASON));
        expect(res, StatusCode::OK).await;
    }
    assert_rate_limited(app.as_key(&key).get(CHECK).await, 3).await;
    // Every route, a handler's own answers included.
    assert_rate_limited(app.as_key(&key).get("/api/v1/api_key/").await, 3).await;
    assert_rate_limited(
        app.as_key(&key)
            .post_json("/api/v1/run/anything", &json!({}))
            .await,
        3,
    )
    .await;

    // A refusal for the address carries the headers too, and costs nothing.
    for _ in 0..4 {
        let res = app.as_key(&fenced).get(CHECK).await;
        assert_eq!(
            rate_headers(&res),
            Some((3, 3, rate_headers(&res).unwrap().2))
        );
        assert_eq!(res.headers()[REASON], "FORBIDDEN_ADDRESS");
        expect(res, StatusCode::FORBIDDEN).await;
    }
    // Keys without a limit and sessions get no such headers.
    let res = app.as_key(&unlimited).get(CHECK).await;
    assert_eq!(rate_headers(&res), None);
    expect(res, StatusCode::OK).await;
    let res = app.as_session(&admin).get("/api/v1/api_key/").await;
    assert_eq!(rate_headers(&res), None);

    // A raised limit applies at once and keeps the window's count.
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{id}"),
            &json!({"rate_limit": {"requests": 5, "per_seconds": seconds}}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    let (status, remaining, _) = call(&app, &key).await;
    assert_eq!((status, remaining), (StatusCode::OK, Some(1)));
    let (status, remaining, _) = call(&app, &key).await;
    assert_eq!((status, remaining), (StatusCode::OK, Some(0)));
    assert_rate_limited(app.as_key(&key).get(CHECK).await, 5).await;
    // Removing it lifts it, and the answers lose the headers.
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/api_key/{id}"),
            &json!({"rate_limit": null}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    let (status, remaining, _) = call(&app, &key).await;
    assert_eq!((status, remaining), (StatusCode::OK, None));
}

/// Polls `f` until it is true or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_short_window_opens_again(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, key, _) = key_with(
        &app,
        &admin,
        json!({"rate_limit": {"requests": 1, "per_seconds": 1}}),
    )
    .await;
    // Within a second the key gets its one request, then a 429 telling it
    // to come back in a second; the next window lets it through again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let first = call(&app, &key).await;
        let second = app.as_key(&key).get(CHECK).await;
        if first.0 == StatusCode::OK && second.status() == StatusCode::TOO_MANY_REQUESTS {
            break second;
        }
        assert!(Instant::now() < deadline, "no refusal within one window");
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_rate_limited(refused, 1).await;
    eventually("the next window", || async {
        call(&app, &key).await.0 == StatusCode::OK
    })
    .await;
}

async fn a_limited_key_cannot_give_a_looser_limit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, limited, _) = key_with(
        &app,
        &admin,
        json!({"rate_limit": {"requests": 100, "per_seconds": 60}}),
    )
    .await;
    for looser in [
        Value::Null,
        json!({"requests": 101, "per_seconds": 60}),
        json!({"requests": 100, "per_seconds": 59}),
    ] {
        let res = app
            .as_key(&limited)
            .post_json("/api/v1/api_key/", &json!({"rate_limit": looser}))
            .await;
        let body = expect(res, StatusCode::FORBIDDEN).await;
        assert!(body["detail"].as_str().unwrap().contains("rate_limit"));
    }
    let res = app
        .as_key(&limited)
        .post_json("/api/v1/api_key/", &json!({}))
        .await;
    expect(res, StatusCode::FORBIDDEN).await;
    // As strict or stricter is fine.
    for stricter in [
        json!({"requests": 100, "per_seconds": 60}),
        json!({"requests": 10, "per_seconds": 60}),
        json!({"requests": 50, "per_seconds": 120}),
    ] {
        let res = app
            .as_key(&limited)
            .post_json("/api/v1/api_key/", &json!({"rate_limit": stricter}))
            .await;
        assert_eq!(expect(res, StatusCode::OK).await["rate_limit"], stricter);
    }
}

/// The window's shared count, as stored.
fn stored_count(db: &TestDb, key_id: &str) -> i64 {
    let mut conn = db.connect();
    rate_limit_windows::table
        .filter(rate_limit_windows::key_id.eq(key_id))
        .select(rate_limit_windows::count)
        .load::<i64>(&mut conn)
        .unwrap()
        .into_iter()
        .sum()
}

/// Two instances on one database, each syncing only when the test says:
/// each decides from its own view, learns the other's use at its sync, and
/// the overshoot is exactly what the other accepted since the last sync.
async fn the_limit_is_shared_between_instances(backend: Backend) {
    let settings = [("KEYGATE_RATE_LIMIT_SYNC_MS", "60000")];
    let a = TestApp::start_with(backend, &settings).await;
    let admin = a.admin_token().await;
    let (id, key, _) = key_with(
        &a,
        &admin,
        json!({"rate_limit": {"requests": 10, "per_seconds": long_window()}}),
    )
    .await;
    let b = TestApp::start_on(a.db.alias(), &settings).await;
    let mut accepted = 0;

    for expected in [9, 8, 7, 6] {
        assert_eq!(call(&a, &key).await.1, Some(expected));
        accepted += 1;
    }
    assert_eq!(a.state().limits.sync().await.unwrap(), 1);
    assert_eq!(stored_count(&a.db, &id), 4);
    // B has not heard of A's four yet.
    for expected in [9, 8, 7] {
        let (status, remaining, _) = call(&b, &key).await;
        assert_eq!((status, remaining), (StatusCode::OK, Some(expected)));
        accepted += 1;
    }
    b.state().limits.sync().await.unwrap();
    assert_eq!(stored_count(&a.db, &id), 7);
    // Now it has: three left between them.
    for expected in [2, 1, 0] {
        let (status, remaining, _) = call(&b, &key).await;
        assert_eq!((status, remaining), (StatusCode::OK, Some(expected)));
        accepted += 1;
    }
    let (_, _, res) = call(&b, &key).await;
    assert_rate_limited(res, 10).await;
    // A still knows only the four it had at its sync: it accepts up to the
    // limit from its own view, the overshoot the operator guide states.
    for expected in [5, 4, 3, 2, 1, 0] {
        let (status, remaining, _) = call(&a, &key).await;
        assert_eq!((status, remaining), (StatusCode::OK, Some(expected)));
        accepted += 1;
    }
    let (_, _, res) = call(&a, &key).await;
    assert_rate_limited(res, 10).await;
    a.state().limits.sync().await.unwrap();
    b.state().limits.sync().await.unwrap();
    // The shared count is exact, and the overshoot was what B accepted
    // since A's sync (six), within the bound of one instance's share.
    assert_eq!(stored_count(&a.db, &id), accepted);
    assert_eq!(accepted, 16);
    assert!(accepted <= 2 * 10);
    for app in [&a, &b] {
        let (_, _, res) = call(app, &key).await;
        assert_rate_limited(res, 10).await;
    }
    // Refusals are not counted.
    assert_eq!(a.state().limits.sync().await.unwrap(), 0);
    assert_eq!(stored_count(&a.db, &id), 16);
}

/// Two instances syncing in the background: requests alternating between
/// them are accepted at least up to the limit and at most within the
/// bound, and both soon refuse.
async fn instances_converge_on_the_limit_by_themselves(backend: Backend) {
    let settings = [("KEYGATE_RATE_LIMIT_SYNC_MS", "20")];
    let a = TestApp::start_with(backend, &settings).await;
    let admin = a.admin_token().await;
    let limit = 20;
    let (id, key, _) = key_with(
        &a,
        &admin,
        json!({"rate_limit": {"requests": limit, "per_seconds": long_window()}}),
    )
    .await;
    let b = TestApp::start_on(a.db.alias(), &settings).await;
    let mut accepted = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut refused = 0;
        for app in [&a, &b] {
            let (status, _, res) = call(app, &key).await;
            if status == StatusCode::OK {
                accepted += 1;
            } else {
                assert_rate_limited(res, limit).await;
                refused += 1;
            }
        }
        if refused == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the instances never both refused"
        );
    }
    // Never fewer than the limit; never more than each instance's own
    // limit (the bound is one sync interval's worth per other instance).
    assert!(accepted >= limit, "{accepted}");
    assert!(accepted <= 2 * limit, "{accepted}");
    eventually("the last counts shared", || async {
        stored_count(&a.db, &id) == accepted
    })
    .await;
}

async fn usage(app: &TestApp, token: &str, path: &str) -> Value {
    expect(app.as_session(token).get(path).await, StatusCode::OK).await
}

/// Sums (requests, refused) over a list of buckets.
fn sums(buckets: &Value) -> (i64, i64) {
    buckets
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0), |(a, b), bucket| {
            (
                a + bucket["requests"].as_i64().unwrap(),
                b + bucket["refused"].as_i64().unwrap(),
            )
        })
}

/// Asserts the answer's shape (every day of the range, today last, and 48
/// hours, this hour last, all UTC) and its sums.
fn assert_usage(answer: &Value, days: usize, expected: (i64, i64)) {
    let listed = answer["days"].as_array().unwrap();
    assert_eq!(listed.len(), days);
    let now = chrono::Utc::now();
    let today = now.format("%Y-%m-%d").to_string();
    let yesterday = (now - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let last = listed.last().unwrap()["day"].as_str().unwrap();
    assert!(last == today || last == yesterday, "{last}");
    for pair in listed.windows(2) {
        let a = chrono::NaiveDate::parse_from_str(pair[0]["day"].as_str().unwrap(), "%Y-%m-%d")
            .unwrap();
        let b = chrono::NaiveDate::parse_from_str(pair[1]["day"].as_str().unwrap(), "%Y-%m-%d")
            .unwrap();
        assert_eq!(b - a, chrono::Duration::days(1));
    }
    let hours = answer["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 48);
    for pair in hours.windows(2) {
        let a = chrono::DateTime::parse_from_rfc3339(pair[0]["hour"].as_str().unwrap()).unwrap();
        let b = chrono::DateTime::parse_from_rfc3339(pair[1]["hour"].as_str().unwrap()).unwrap();
        assert_eq!(b - a, chrono::Duration::hours(1));
    }
    let last_hour = hours.last().unwrap()["hour"].as_str().unwrap();
    assert!(last_hour.ends_with(":00:00Z"), "{last_hour}");
    assert!(
        now.signed_duration_since(chrono::DateTime::parse_from_rfc3339(last_hour).unwrap())
            < chrono::Duration::hours(2)
    );
    assert_eq!(sums(&answer["days"]), expected, "{answer}");
    assert_eq!(sums(&answer["hours"]), expected, "{answer}");
}

fn listed_key(list: &Value, id: &str) -> Value {
    list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap()
        .clone()
}

async fn usage_counts_requests_and_refusals_by_day_and_hour(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (id, key, _) = key_with(
        &app,
        &admin,
        json!({"scopes": ["read"], "rate_limit": {"requests": 6, "per_seconds": long_window()}}),
    )
    .await;
    let (fenced_id, fenced, _) =
        key_with(&app, &admin, json!({"allowed_ips": ["127.0.0.99/32"]})).await;
    let path = format!("/api/v1/api_key/{id}/usage");
    let fresh = usage(&app, &admin, &path).await;
    assert_eq!(fresh["key_id"], id.as_str());
    assert_usage(&fresh, 30, (0, 0));

    for _ in 0..3 {
        expect(app.as_key(&key).get(CHECK).await, StatusCode::OK).await;
    }
    // Refused by the middleware (scope), by a handler (no admin scope).
    let res = app
        .as_key(&key)
        .post_json("/api/v1/api_key/", &json!({}))
        .await;
    assert_eq!(res.headers()[REASON], "MISSING_SCOPE");
    let res = app.as_key(&key).get("/api/v1/users/").await;
    assert_eq!(res.headers()[REASON], "MISSING_SCOPE");
    for _ in 0..2 {
        expect(app.as_key(&key).get(CHECK).await, StatusCode::OK).await;
    }
    let (_, _, res) = call(&app, &key).await;
    assert_rate_limited(res, 6).await;
    for _ in 0..2 {
        let res = app.as_key(&fenced).get(CHECK).await;
        assert_eq!(res.headers()[REASON], "FORBIDDEN_ADDRESS");
    }

    // Before any write: what this instance holds.
    assert_usage(&usage(&app, &admin, &path).await, 30, (8, 3));
    let fenced_path = format!("/api/v1/api_key/{fenced_id}/usage");
    assert_usage(&usage(&app, &admin, &fenced_path).await, 30, (2, 2));
    let list = usage(&app, &admin, "/api/v1/api_key/").await;
    let shown = listed_key(&list, &id);
    assert_eq!(shown["total_uses"], 8);
    assert_eq!(shown["last_used_from"], "127.0.0.1");
    assert!(shown["last_used_at"].is_string());
    let mut conn = app.db.connect();
    let stored: Vec<i64> = key_usage_hours::table
        .select(key_usage_hours::requests)
        .load(&mut conn)
        .unwrap();
    assert!(stored.is_empty(), "no write per request");

    // After the batched write: the same, from the database.
    app.state().usage.flush().await.unwrap();
    let stored: i64 = key_usage_hours::table
        .filter(key_usage_hours::key_id.eq(&id))
        .select(key_usage_hours::requests)
        .load::<i64>(&mut conn)
        .unwrap()
        .into_iter()
        .sum();
    assert_eq!(stored, 8);
    assert_usage(&usage(&app, &admin, &path).await, 30, (8, 3));
    let list = usage(&app, &admin, "/api/v1/api_key/").await;
    let shown = listed_key(&list, &id);
    assert_eq!(shown["total_uses"], 8);
    assert_eq!(shown["last_used_from"], "127.0.0.1");
    // Stored and pending add up; the key itself may read its usage.
    let res = app.as_key(&key).get(&path).await;
    assert_rate_limited(res, 6).await;
    assert_usage(&usage(&app, &admin, &path).await, 30, (9, 4));
    assert_usage(
        &usage(&app, &admin, &format!("{path}?days=1")).await,
        1,
        (9, 4),
    );
    assert_usage(
        &usage(&app, &admin, &format!("{path}?days=366")).await,
        366,
        (9, 4),
    );
    // A restart writes what is pending and keeps it all.
    let db = app.stop().await;
    let app = TestApp::start_on(db, &[]).await;
    let admin = app.admin_token().await;
    assert_usage(&usage(&app, &admin, &path).await, 30, (9, 4));
    let list = usage(&app, &admin, "/api/v1/api_key/").await;
    assert_eq!(listed_key(&list, &id)["total_uses"], 9);
}

async fn usage_days_are_checked_and_keys_are_private(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, alice) = app.create_user(&admin, "alice").await;
    let (alice_key_id, alice_key, _) = key_with(&app, &alice, json!({})).await;
    let (admin_key_id, _, _) = key_with(&app, &admin, json!({})).await;
    expect(app.as_key(&alice_key).get(CHECK).await, StatusCode::OK).await;
    let path = format!("/api/v1/api_key/{alice_key_id}/usage");
    for bad in ["0", "367", "-1", "1.5", "abc", "1e3"] {
        let res = app
            .as_session(&alice)
            .get(&format!("{path}?days={bad}"))
            .await;
        let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["detail"], "days must be a whole number from 1 to 366");
    }
    assert_usage(&usage(&app, &alice, &path).await, 30, (1, 0));
    // Another user's key is not there, for a user and for their keys.
    let other = format!("/api/v1/api_key/{admin_key_id}/usage");
    let body = expect(
        app.as_session(&alice).get(&other).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(body["detail"], "API Key not found");
    expect(
        app.as_key(&alice_key).get(&other).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let unknown = format!("/api/v1/api_key/{}/usage", uuid::Uuid::new_v4());
    expect(
        app.as_session(&alice).get(&unknown).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect(
        app.as_session(&alice)
            .get("/api/v1/api_key/nope/usage")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // A superuser reads anyone's; the key's 404 above was a request too.
    assert_usage(&usage(&app, &admin, &path).await, 30, (2, 0));
    // Deleting the key deletes its usage with it.
    app.state().usage.flush().await.unwrap();
    expect(
        app.as_session(&alice)
            .delete(&format!("/api/v1/api_key/{alice_key_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    expect(
        app.as_session(&admin).get(&path).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let mut conn = app.db.connect();
    let left: i64 = key_usage_hours::table
        .filter(key_usage_hours::key_id.eq(&alice_key_id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(left, 0);
}

async fn last_used_from_follows_trusted_proxies(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let admin = app.admin_token().await;
    let (id, key, _) = key_with(&app, &admin, json!({})).await;
    let list = usage(&app, &admin, "/api/v1/api_key/").await;
    assert_eq!(listed_key(&list, &id)["last_used_from"], Value::Null);
    let res = app
        .as_key(&key)
        .request(reqwest::Method::GET, CHECK)
        .header("x-forwarded-for", "127.0.0.9")
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    let list = usage(&app, &admin, "/api/v1/api_key/").await;
    assert_eq!(listed_key(&list, &id)["last_used_from"], "127.0.0.9");
    app.state().usage.flush().await.unwrap();
    let list = usage(&app, &admin, "/api/v1/api_key/").await;
    assert_eq!(listed_key(&list, &id)["last_used_from"], "127.0.0.9");
    // The next use from elsewhere replaces it.
    expect(app.as_key(&key).get(CHECK).await, StatusCode::OK).await;
    app.state().usage.flush().await.unwrap();
    let list = usage(&app, &admin, "/api/v1/api_key/").await;
    assert_eq!(listed_key(&list, &id)["last_used_from"], "127.0.0.1");
}
