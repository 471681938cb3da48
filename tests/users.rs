//! Users, sign-in and sessions, on both backends.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{expect, Backend, TestApp, ADMIN, ADMIN_PASSWORD};

crate::on_both_backends!(
    sign_in_with_form_or_json_sets_a_strict_cookie,
    wrong_username_and_wrong_password_look_the_same,
    logout_ends_the_session,
    admin_creates_lists_updates_and_deletes_users,
    sign_up_is_off_by_default_and_creates_inactive_users_when_on,
    the_last_active_superuser_is_protected,
    deleting_a_user_deletes_their_keys,
    inactive_users_cannot_sign_in_or_use_keys,
    password_change_ends_other_sessions,
);

async fn sign_in_with_form_or_json_sets_a_strict_cookie(backend: Backend) {
    let app = TestApp::start(backend).await;
    let res = app
        .client
        .post(app.url("/api/v1/login"))
        .form(&[("username", ADMIN), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    let body = expect(res, StatusCode::OK).await;
    assert_eq!(body["token_type"], "bearer");
    let token = body["access_token"].as_str().unwrap();
    assert!(cookie.starts_with(&format!("keygate_session={token}")));
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Strict"));
    assert!(
        !cookie.contains("Secure"),
        "Secure only when KEYGATE_COOKIE_SECURE=true"
    );

    let json_login = app
        .client
        .post(app.url("/api/v1/login"))
        .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    expect(json_login, StatusCode::OK).await;

    let by_cookie = app
        .client
        .get(app.url("/api/v1/users/whoami"))
        .header("cookie", format!("keygate_session={token}"))
        .send()
        .await
        .unwrap();
    let me = expect(by_cookie, StatusCode::OK).await;
    assert_eq!(me["username"], ADMIN);
    assert_eq!(me["is_superuser"], true);
    assert!(me["last_login_at"].is_string());

    let secure = TestApp::start_with(backend, &[("KEYGATE_COOKIE_SECURE", "true")]).await;
    let res = secure
        .client
        .post(secure.url("/api/v1/login"))
        .form(&[("username", ADMIN), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert!(res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
}

async fn wrong_username_and_wrong_password_look_the_same(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut answers = Vec::new();
    for (user, password) in [(ADMIN, "wrong-password"), ("nobody", "wrong-password")] {
        let res = app
            .client
            .post(app.url("/api/v1/login"))
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("set-cookie").is_none());
        answers.push(expect(res, StatusCode::UNAUTHORIZED).await);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        answers[0],
        json!({"detail": "Incorrect username or password"})
    );
    let missing = app
        .client
        .post(app.url("/api/v1/login"))
        .form(&[("username", ADMIN)])
        .send()
        .await
        .unwrap();
    expect(missing, StatusCode::UNPROCESSABLE_ENTITY).await;
}

async fn logout_ends_the_session(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let res = app
        .client
        .post(app.url("/api/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    let after = app
        .client
        .get(app.url("/api/v1/users/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect(after, StatusCode::UNAUTHORIZED).await;
    // A stale session cookie does not stand in the way of signing in again.
    let again = app
        .client
        .post(app.url("/api/v1/login"))
        .header("cookie", format!("keygate_session={token}"))
        .form(&[("username", ADMIN), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    expect(again, StatusCode::OK).await;
}

async fn admin_creates_lists_updates_and_deletes_users(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let res = app
        .client
        .post(app.url("/api/v1/users/"))
        .bearer_auth(&admin)
        .json(&json!({"username": "erin", "password": "erin-password"}))
        .send()
        .await
        .unwrap();
    let erin = expect(res, StatusCode::CREATED).await;
    assert_eq!(
        erin["is_active"], false,
        "KEYGATE_NEW_USER_IS_ACTIVE defaults to false"
    );
    assert_eq!(erin["is_superuser"], false);
    assert!(erin.get("password_hash").is_none() && erin.get("password").is_none());
    let erin_id = erin["id"].as_str().unwrap().to_string();

    let duplicate = app
        .client
        .post(app.url("/api/v1/users/"))
        .bearer_auth(&admin)
        .json(&json!({"username": "erin", "password": "another-password"}))
        .send()
        .await
        .unwrap();
    expect(duplicate, StatusCode::CONFLICT).await;
    let weak = app
        .client
        .post(app.url("/api/v1/users/"))
        .bearer_auth(&admin)
        .json(&json!({"username": "weak", "password": "short"}))
        .send()
        .await
        .unwrap();
    expect(weak, StatusCode::UNPROCESSABLE_ENTITY).await;

    for i in 0..3 {
        app.create_user(&admin, &format!("user{i}")).await;
    }
    let page = expect(
        app.client
            .get(app.url("/api/v1/users/?skip=1&limit=2"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["total_count"], 5);
    assert_eq!(page["users"].as_array().unwrap().len(), 2);

    let res = app
        .client
        .patch(app.url(&format!("/api/v1/users/{erin_id}")))
        .bearer_auth(&admin)
        .json(&json!({"is_active": true, "is_superuser": true, "password": "erin-new-password"}))
        .send()
        .await
        .unwrap();
    let updated = expect(res, StatusCode::OK).await;
    assert_eq!(updated["is_active"], true);
    assert_eq!(updated["is_superuser"], true);
    let erin_token = app.login("erin", "erin-new-password").await;
    let (status, _) = (
        app.client
            .get(app.url("/api/v1/users/"))
            .bearer_auth(&erin_token)
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, StatusCode::OK);

    let res = app
        .client
        .delete(app.url(&format!("/api/v1/users/{erin_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/users/{erin_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::NOT_FOUND).await;

    // Non-superusers cannot use the admin API.
    let (frank_id, frank) = app.create_user(&admin, "frank").await;
    for res in [
        app.client
            .get(app.url("/api/v1/users/"))
            .bearer_auth(&frank)
            .send()
            .await
            .unwrap(),
        app.client
            .post(app.url("/api/v1/users/"))
            .bearer_auth(&frank)
            .json(&json!({"username": "x", "password": "x-password"}))
            .send()
            .await
            .unwrap(),
        app.client
            .patch(app.url(&format!("/api/v1/users/{frank_id}")))
            .bearer_auth(&frank)
            .json(&json!({"is_superuser": true}))
            .send()
            .await
            .unwrap(),
    ] {
        expect(res, StatusCode::FORBIDDEN).await;
    }
}

async fn sign_up_is_off_by_default_and_creates_inactive_users_when_on(backend: Backend) {
    let app = TestApp::start(backend).await;
    let anonymous = app
        .client
        .post(app.url("/api/v1/users/"))
        .json(&json!({"username": "gina", "password": "gina-password"}))
        .send()
        .await
        .unwrap();
    expect(anonymous, StatusCode::UNAUTHORIZED).await;

    let open = TestApp::start_with(backend, &[("KEYGATE_ENABLE_SIGNUP", "true")]).await;
    let res = open
        .client
        .post(open.url("/api/v1/users/"))
        .json(&json!({"username": "gina", "password": "gina-password", "is_superuser": true, "is_active": true}))
        .send()
        .await
        .unwrap();
    let gina = expect(res, StatusCode::CREATED).await;
    assert_eq!(
        gina["is_superuser"], false,
        "sign-up never makes superusers"
    );
    assert_eq!(gina["is_active"], false);
    let login = open
        .client
        .post(open.url("/api/v1/login"))
        .form(&[("username", "gina"), ("password", "gina-password")])
        .send()
        .await
        .unwrap();
    expect(login, StatusCode::UNAUTHORIZED).await;

    let active = TestApp::start_with(
        backend,
        &[
            ("KEYGATE_ENABLE_SIGNUP", "true"),
            ("KEYGATE_NEW_USER_IS_ACTIVE", "true"),
        ],
    )
    .await;
    let res = active
        .client
        .post(active.url("/api/v1/users/"))
        .json(&json!({"username": "hank", "password": "hank-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(res, StatusCode::CREATED).await["is_active"], true);
    active.login("hank", "hank-password").await;
}

async fn the_last_active_superuser_is_protected(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let me: Value = app
        .client
        .get(app.url("/api/v1/users/whoami"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin_id = me["id"].as_str().unwrap();
    for change in [json!({"is_superuser": false}), json!({"is_active": false})] {
        let res = app
            .client
            .patch(app.url(&format!("/api/v1/users/{admin_id}")))
            .bearer_auth(&admin)
            .json(&change)
            .send()
            .await
            .unwrap();
        expect(res, StatusCode::BAD_REQUEST).await;
    }
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/users/{admin_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::BAD_REQUEST).await;

    // With a second superuser, the first may be demoted.
    let res = app
        .client
        .post(app.url("/api/v1/users/"))
        .bearer_auth(&admin)
        .json(&json!({"username": "root2", "password": "root2-password", "is_superuser": true, "is_active": true}))
        .send()
        .await
        .unwrap();
    let root2 = expect(res, StatusCode::CREATED).await;
    let root2_token = app.login("root2", "root2-password").await;
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/users/{admin_id}")))
        .bearer_auth(&root2_token)
        .json(&json!({"is_superuser": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(res, StatusCode::OK).await["is_superuser"], false);
    // Now root2 is the last one.
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/users/{}", root2["id"].as_str().unwrap())))
        .bearer_auth(&root2_token)
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::BAD_REQUEST).await;
}

async fn deleting_a_user_deletes_their_keys(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (ivy_id, ivy) = app.create_user(&admin, "ivy").await;
    let (key_id, key) = app.create_key(&ivy, "ivy").await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/users/{ivy_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::UNAUTHORIZED);
    use diesel::prelude::*;
    use keygate::db::schema::{api_keys, sessions};
    let mut conn = app.db.connect();
    let keys: i64 = api_keys::table
        .filter(api_keys::id.eq(&key_id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(keys, 0);
    let sessions: i64 = sessions::table
        .filter(sessions::user_id.eq(&ivy_id))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(sessions, 0);
}

async fn inactive_users_cannot_sign_in_or_use_keys(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (jo_id, jo) = app.create_user(&admin, "jo").await;
    let (_, key) = app.create_key(&jo, "jo").await;
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/users/{jo_id}")))
        .bearer_auth(&admin)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::UNAUTHORIZED);
    let session = app
        .client
        .get(app.url("/api/v1/users/whoami"))
        .bearer_auth(&jo)
        .send()
        .await
        .unwrap();
    expect(session, StatusCode::UNAUTHORIZED).await;
    let login = app
        .client
        .post(app.url("/api/v1/login"))
        .form(&[("username", "jo"), ("password", "jo-password")])
        .send()
        .await
        .unwrap();
    expect(login, StatusCode::UNAUTHORIZED).await;
}

async fn password_change_ends_other_sessions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (kim_id, first) = app.create_user(&admin, "kim").await;
    let second = app.login("kim", "kim-password").await;
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/users/{kim_id}/reset-password")))
        .bearer_auth(&first)
        .json(&json!({"password": "kim-new-password"}))
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::OK).await;
    let status = |token: String| {
        let request = app
            .client
            .get(app.url("/api/v1/users/whoami"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        status(first.clone()).await,
        StatusCode::OK,
        "the changing session stays"
    );
    assert_eq!(status(second).await, StatusCode::UNAUTHORIZED);
    app.login("kim", "kim-new-password").await;
}
