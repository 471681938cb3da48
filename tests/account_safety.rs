//! Account safety on both backends: sign-in throttling, password changes
//! that need the person (a session and the current password), revoking
//! all of one's keys, a superuser's incident response, and cross-site
//! sign-in refused.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp, ADMIN, ADMIN_PASSWORD};

crate::on_both_backends!(
    failed_sign_ins_are_throttled_per_username,
    a_successful_sign_in_resets_the_username,
    failed_sign_ins_are_throttled_per_address,
    cross_site_sign_in_and_sign_out_are_refused,
    keys_cannot_change_passwords_or_accounts,
    changing_ones_own_password_needs_the_current_one,
    a_wrong_current_password_counts_as_a_failed_sign_in,
    all_of_ones_keys_are_revoked_at_once_with_a_session,
    a_superuser_lists_and_revokes_anyones_keys,
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

async fn keys_cannot_change_passwords_or_accounts(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (kim_id, kim) = app.create_user(&admin, "kim").await;
    let (_, kim_key) = app.create_key(&kim, "script").await;
    let (_, admin_key) = app.create_key(&admin, "admin script").await;
    let password_detail = "Changing a password needs a signed-in session, not an API key";

    let own_reset = app
        .as_key(&kim_key)
        .patch_json(
            &format!("/api/v1/users/{kim_id}/reset-password"),
            &json!({"password": "taken-over-1", "current_password": "kim-password"}),
        )
        .await;
    assert_eq!(
        expect(own_reset, StatusCode::FORBIDDEN).await["detail"],
        password_detail
    );
    let own_patch = app
        .as_key(&kim_key)
        .patch_json(
            &format!("/api/v1/users/{kim_id}"),
            &json!({"password": "taken-over-2", "current_password": "kim-password"}),
        )
        .await;
    assert_eq!(
        expect(own_patch, StatusCode::FORBIDDEN).await["detail"],
        password_detail
    );
    // A superuser's key may not reset someone else's password either.
    let other_reset = app
        .as_key(&admin_key)
        .patch_json(
            &format!("/api/v1/users/{kim_id}/reset-password"),
            &json!({"password": "taken-over-3"}),
        )
        .await;
    assert_eq!(
        expect(other_reset, StatusCode::FORBIDDEN).await["detail"],
        password_detail
    );
    for change in [
        json!({"password": "taken-over-4"}),
        json!({"username": "kim2"}),
        json!({"is_superuser": true}),
        json!({"is_active": true}),
    ] {
        let res = app
            .as_key(&admin_key)
            .patch_json(&format!("/api/v1/users/{kim_id}"), &change)
            .await;
        expect(res, StatusCode::FORBIDDEN).await;
    }
    let superuser = app
        .as_key(&admin_key)
        .post_json(
            "/api/v1/users/",
            &json!({"username": "mallory", "password": "mallory-password", "is_superuser": true}),
        )
        .await;
    assert_eq!(
        expect(superuser, StatusCode::FORBIDDEN).await["detail"],
        "Creating a superuser needs a signed-in session, not an API key"
    );
    // Nothing changed: kim signs in with the old password as kim.
    app.login("kim", "kim-password").await;
    // A key may still provision ordinary users and deactivate (the brake).
    let ordinary = app
        .as_key(&admin_key)
        .post_json(
            "/api/v1/users/",
            &json!({"username": "ned", "password": "ned-password"}),
        )
        .await;
    expect(ordinary, StatusCode::CREATED).await;
    let deactivate = app
        .as_key(&admin_key)
        .patch_json(
            &format!("/api/v1/users/{kim_id}"),
            &json!({"is_active": false}),
        )
        .await;
    assert_eq!(expect(deactivate, StatusCode::OK).await["is_active"], false);
    assert_eq!(app.whoami_status(&kim_key).await, StatusCode::UNAUTHORIZED);
}

async fn changing_ones_own_password_needs_the_current_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (kim_id, kim) = app.create_user(&admin, "kim").await;
    let (_, kim_key) = app.create_key(&kim, "script").await;
    let reset = format!("/api/v1/users/{kim_id}/reset-password");
    let missing = app
        .as_session(&kim)
        .patch_json(&reset, &json!({"password": "kim-new-password"}))
        .await;
    assert_eq!(
        expect(missing, StatusCode::UNPROCESSABLE_ENTITY).await["detail"],
        "current_password is required to change your own password"
    );
    let wrong = app
        .as_session(&kim)
        .patch_json(
            &reset,
            &json!({"password": "kim-new-password", "current_password": "not-it-at-all"}),
        )
        .await;
    assert_eq!(
        expect(wrong, StatusCode::FORBIDDEN).await["detail"],
        "Current password is wrong"
    );
    // The superuser's own password is no exception, through either route.
    let admin_id = expect(
        app.as_session(&admin).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/users/{admin_id}"),
            &json!({"password": "admin-new-password"}),
        )
        .await;
    expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;

    let right = app
        .as_session(&kim)
        .patch_json(
            &reset,
            &json!({"password": "kim-new-password", "current_password": "kim-password"}),
        )
        .await;
    expect(right, StatusCode::OK).await;
    app.login("kim", "kim-new-password").await;
    // Keys are not tied to the password: they keep working (revoke them
    // with DELETE /api/v1/api_key/ {"all": true}).
    assert_eq!(app.whoami_status(&kim_key).await, StatusCode::OK);
    let by_patch = app
        .as_session(&kim)
        .patch_json(
            &format!("/api/v1/users/{kim_id}"),
            &json!({"password": "kim-third-password", "current_password": "kim-new-password"}),
        )
        .await;
    expect(by_patch, StatusCode::OK).await;
    app.login("kim", "kim-third-password").await;
    // A superuser resetting someone else's password (with a session) needs
    // only the new one.
    let by_admin = app
        .as_session(&admin)
        .patch_json(&reset, &json!({"password": "kim-fourth-password"}))
        .await;
    expect(by_admin, StatusCode::OK).await;
    app.login("kim", "kim-fourth-password").await;
}

async fn a_wrong_current_password_counts_as_a_failed_sign_in(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYGATE_LOGIN_MAX_FAILURES", "2")]).await;
    let admin = app.admin_token().await;
    let (kim_id, kim) = app.create_user(&admin, "kim").await;
    let reset = format!("/api/v1/users/{kim_id}/reset-password");
    for _ in 0..2 {
        let res = app
            .as_session(&kim)
            .patch_json(
                &reset,
                &json!({"password": "kim-new-password", "current_password": "a-guess-at-it"}),
            )
            .await;
        expect(res, StatusCode::FORBIDDEN).await;
    }
    let right = app
        .as_session(&kim)
        .patch_json(
            &reset,
            &json!({"password": "kim-new-password", "current_password": "kim-password"}),
        )
        .await;
    expect_throttled(right).await;
    let res = app
        .anon()
        .post_form(LOGIN, &[("username", "kim"), ("password", "kim-password")])
        .await;
    expect_throttled(res).await;
}

const KEYS: &str = "/api/v1/api_key/";

async fn all_of_ones_keys_are_revoked_at_once_with_a_session(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, kim) = app.create_user(&admin, "kim").await;
    let (_, ann) = app.create_user(&admin, "ann").await;
    let mut kims = Vec::new();
    for name in ["one", "two", "three"] {
        kims.push(app.create_key(&kim, name).await.1);
    }
    let (_, anns) = app.create_key(&ann, "ann's").await;
    for key in &kims {
        assert_eq!(app.whoami_status(key).await, StatusCode::OK);
    }

    let unconfirmed = app.as_session(&kim).delete(KEYS).await;
    let detail =
        "Send {\"all\": true} to revoke every key at once; one key is DELETE /api/v1/api_key/{id}";
    assert_eq!(
        expect(unconfirmed, StatusCode::UNPROCESSABLE_ENTITY).await["detail"],
        detail
    );
    let not_all = app
        .as_session(&kim)
        .send_json(Method::DELETE, KEYS, &json!({"all": false}))
        .await;
    expect(not_all, StatusCode::UNPROCESSABLE_ENTITY).await;
    let by_key = app
        .as_key(&kims[0])
        .send_json(Method::DELETE, KEYS, &json!({"all": true}))
        .await;
    assert_eq!(
        expect(by_key, StatusCode::FORBIDDEN).await["detail"],
        "Revoking all keys at once needs a signed-in session, not an API key"
    );
    assert_eq!(app.whoami_status(&kims[0]).await, StatusCode::OK);

    let revoked = app
        .as_session(&kim)
        .send_json(Method::DELETE, KEYS, &json!({"all": true}))
        .await;
    assert_eq!(expect(revoked, StatusCode::OK).await["revoked"], 3);
    for key in &kims {
        assert_eq!(app.whoami_status(key).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.whoami_status(&anns).await, StatusCode::OK);
    let list = expect(app.as_session(&kim).get(KEYS).await, StatusCode::OK).await;
    assert_eq!(list["total_count"], 0);
    let again = app
        .as_session(&kim)
        .send_json(Method::DELETE, "/api/v1/api_key", &json!({"all": true}))
        .await;
    assert_eq!(expect(again, StatusCode::OK).await["revoked"], 0);
}

async fn a_superuser_lists_and_revokes_anyones_keys(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (kim_id, kim) = app.create_user(&admin, "kim").await;
    let (_, ann) = app.create_user(&admin, "ann").await;
    let (first_id, first) = app.create_key(&kim, "first").await;
    let (_, second) = app.create_key(&kim, "second").await;
    let (_, admin_key) = app.create_key(&admin, "admin script").await;

    let listed = expect(
        app.as_session(&admin)
            .get(&format!("{KEYS}?user_id={kim_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["user_id"], kim_id.as_str());
    assert_eq!(listed["total_count"], 2);
    assert_eq!(listed["api_keys"][0]["id"], first_id.as_str());
    assert_ne!(listed["api_keys"][0]["api_key"], first.as_str(), "masked");
    // A superuser's key may look too (reading changes nothing).
    let by_key = app
        .as_key(&admin_key)
        .get(&format!("{KEYS}?user_id={kim_id}"))
        .await;
    assert_eq!(expect(by_key, StatusCode::OK).await["total_count"], 2);
    let unknown = app
        .as_session(&admin)
        .get(&format!("{KEYS}?user_id={}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(
        expect(unknown, StatusCode::NOT_FOUND).await["detail"],
        "User not found"
    );
    let malformed = app
        .as_session(&admin)
        .get(&format!("{KEYS}?user_id=kim"))
        .await;
    expect(malformed, StatusCode::UNPROCESSABLE_ENTITY).await;
    let admin_id = listed_owner(&app, &admin).await;
    let nosy = app
        .as_session(&ann)
        .get(&format!("{KEYS}?user_id={admin_id}"))
        .await;
    expect(nosy, StatusCode::FORBIDDEN).await;
    let own = app
        .as_session(&kim)
        .get(&format!("{KEYS}?user_id={kim_id}"))
        .await;
    assert_eq!(expect(own, StatusCode::OK).await["total_count"], 2);

    // Revoking one key: only a superuser may reach another user's.
    let by_ann = app
        .as_session(&ann)
        .delete(&format!("{KEYS}{first_id}"))
        .await;
    assert_eq!(
        expect(by_ann, StatusCode::NOT_FOUND).await["detail"],
        "API Key not found"
    );
    assert_eq!(app.whoami_status(&first).await, StatusCode::OK);
    let by_admin = app
        .as_session(&admin)
        .delete(&format!("{KEYS}{first_id}"))
        .await;
    expect(by_admin, StatusCode::OK).await;
    assert_eq!(app.whoami_status(&first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.whoami_status(&second).await, StatusCode::OK);
    let gone = app
        .as_session(&admin)
        .delete(&format!("{KEYS}{first_id}"))
        .await;
    expect(gone, StatusCode::NOT_FOUND).await;

    // And all of a user's keys at once.
    let all = app
        .as_session(&admin)
        .send_json(
            Method::DELETE,
            &format!("{KEYS}?user_id={kim_id}"),
            &json!({"all": true}),
        )
        .await;
    let all = expect(all, StatusCode::OK).await;
    assert_eq!(all["revoked"], 1);
    assert_eq!(all["user_id"], kim_id.as_str());
    assert_eq!(app.whoami_status(&second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.whoami_status(&admin_key).await, StatusCode::OK);
}

/// The caller's own id, as the key list names it.
async fn listed_owner(app: &TestApp, token: &str) -> String {
    let list = expect(app.as_session(token).get(KEYS).await, StatusCode::OK).await;
    list["user_id"].as_str().unwrap().to_string()
}
