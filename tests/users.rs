//! Users, sign-in and sessions, on both backends.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp, ADMIN, ADMIN_PASSWORD};

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
        .anon()
        .post_form(
            "/api/v1/login",
            &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
        )
        .await;
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
        .anon()
        .post_json(
            "/api/v1/login",
            &json!({"username": ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await;
    expect(json_login, StatusCode::OK).await;

    let by_cookie = app.as_cookie(token).get("/api/v1/users/whoami").await;
    let me = expect(by_cookie, StatusCode::OK).await;
    assert_eq!(me["username"], ADMIN);
    assert_eq!(me["is_superuser"], true);
    assert!(me["last_login_at"].is_string());

    let secure = TestApp::start_with(backend, &[("KEYGATE_COOKIE_SECURE", "true")]).await;
    let res = secure
        .anon()
        .post_form(
            "/api/v1/login",
            &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
        )
        .await;
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
            .anon()
            .post_form(
                "/api/v1/login",
                &[("username", user), ("password", password)],
            )
            .await;
        assert!(res.headers().get("set-cookie").is_none());
        answers.push(expect(res, StatusCode::UNAUTHORIZED).await);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        answers[0],
        json!({"detail": "Incorrect username or password"})
    );
    let missing = app
        .anon()
        .post_form("/api/v1/login", &[("username", ADMIN)])
        .await;
    expect(missing, StatusCode::UNPROCESSABLE_ENTITY).await;
}

async fn logout_ends_the_session(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let res = app.as_session(&token).post("/api/v1/logout").await;
    expect(res, StatusCode::OK).await;
    let after = app.as_session(&token).get("/api/v1/users/whoami").await;
    expect(after, StatusCode::UNAUTHORIZED).await;
    // A stale session cookie does not stand in the way of signing in again.
    let again = app
        .as_cookie(&token)
        .post_form(
            "/api/v1/login",
            &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
        )
        .await;
    expect(again, StatusCode::OK).await;
}

async fn admin_creates_lists_updates_and_deletes_users(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let admin = app.as_session(&token);
    let res = admin
        .post_json(
            "/api/v1/users/",
            &json!({"username": "erin", "password": "erin-password"}),
        )
        .await;
    let erin = expect(res, StatusCode::CREATED).await;
    assert_eq!(
        erin["is_active"], false,
        "KEYGATE_NEW_USER_IS_ACTIVE defaults to false"
    );
    assert_eq!(erin["is_superuser"], false);
    assert!(erin.get("password_hash").is_none() && erin.get("password").is_none());
    let erin_id = erin["id"].as_str().unwrap().to_string();

    let duplicate = admin
        .post_json(
            "/api/v1/users/",
            &json!({"username": "erin", "password": "another-password"}),
        )
        .await;
    expect(duplicate, StatusCode::CONFLICT).await;
    let weak = admin
        .post_json(
            "/api/v1/users/",
            &json!({"username": "weak", "password": "short"}),
        )
        .await;
    expect(weak, StatusCode::UNPROCESSABLE_ENTITY).await;

    for i in 0..3 {
        app.create_user(&token, &format!("user{i}")).await;
    }
    let page = expect(
        admin.get("/api/v1/users/?skip=1&limit=2").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["total_count"], 5);
    assert_eq!(page["users"].as_array().unwrap().len(), 2);

    let res = admin
        .patch_json(
            &format!("/api/v1/users/{erin_id}"),
            &json!({"is_active": true, "is_superuser": true, "password": "erin-new-password"}),
        )
        .await;
    let updated = expect(res, StatusCode::OK).await;
    assert_eq!(updated["is_active"], true);
    assert_eq!(updated["is_superuser"], true);
    let erin_token = app.login("erin", "erin-new-password").await;
    let status = app
        .as_session(&erin_token)
        .get("/api/v1/users/")
        .await
        .status();
    assert_eq!(status, StatusCode::OK);

    let res = admin.delete(&format!("/api/v1/users/{erin_id}")).await;
    expect(res, StatusCode::OK).await;
    let res = admin.delete(&format!("/api/v1/users/{erin_id}")).await;
    expect(res, StatusCode::NOT_FOUND).await;

    // Non-superusers cannot use the admin API.
    let (frank_id, frank) = app.create_user(&token, "frank").await;
    let frank = app.as_session(&frank);
    for res in [
        frank.get("/api/v1/users/").await,
        frank
            .post_json(
                "/api/v1/users/",
                &json!({"username": "x", "password": "x-password"}),
            )
            .await,
        frank
            .patch_json(
                &format!("/api/v1/users/{frank_id}"),
                &json!({"is_superuser": true}),
            )
            .await,
    ] {
        expect(res, StatusCode::FORBIDDEN).await;
    }
}

async fn sign_up_is_off_by_default_and_creates_inactive_users_when_on(backend: Backend) {
    let app = TestApp::start(backend).await;
    let anonymous = app
        .anon()
        .post_json(
            "/api/v1/users/",
            &json!({"username": "gina", "password": "gina-password"}),
        )
        .await;
    expect(anonymous, StatusCode::UNAUTHORIZED).await;

    let open = TestApp::start_with(backend, &[("KEYGATE_ENABLE_SIGNUP", "true")]).await;
    let res = open
        .anon()
        .post_json(
            "/api/v1/users/",
            &json!({"username": "gina", "password": "gina-password", "is_superuser": true, "is_active": true}),
        )
        .await;
    let gina = expect(res, StatusCode::CREATED).await;
    assert_eq!(
        gina["is_superuser"], false,
        "sign-up never makes superusers"
    );
    assert_eq!(gina["is_active"], false);
    let login = open
        .anon()
        .post_form(
            "/api/v1/login",
            &[("username", "gina"), ("password", "gina-password")],
        )
        .await;
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
        .anon()
        .post_json(
            "/api/v1/users/",
            &json!({"username": "hank", "password": "hank-password"}),
        )
        .await;
    assert_eq!(expect(res, StatusCode::CREATED).await["is_active"], true);
    active.login("hank", "hank-password").await;
}

async fn the_last_active_superuser_is_protected(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let admin = app.as_session(&token);
    let me: Value = admin
        .get("/api/v1/users/whoami")
        .await
        .json()
        .await
        .unwrap();
    let admin_id = me["id"].as_str().unwrap();
    for change in [json!({"is_superuser": false}), json!({"is_active": false})] {
        let res = admin
            .patch_json(&format!("/api/v1/users/{admin_id}"), &change)
            .await;
        expect(res, StatusCode::BAD_REQUEST).await;
    }
    let res = admin.delete(&format!("/api/v1/users/{admin_id}")).await;
    expect(res, StatusCode::BAD_REQUEST).await;

    // With a second superuser, the first may be demoted.
    let res = admin
        .post_json(
            "/api/v1/users/",
            &json!({"username": "root2", "password": "root2-password", "is_superuser": true, "is_active": true}),
        )
        .await;
    let root2 = expect(res, StatusCode::CREATED).await;
    let root2_token = app.login("root2", "root2-password").await;
    let root2_session = app.as_session(&root2_token);
    let res = root2_session
        .patch_json(
            &format!("/api/v1/users/{admin_id}"),
            &json!({"is_superuser": false}),
        )
        .await;
    assert_eq!(expect(res, StatusCode::OK).await["is_superuser"], false);
    // Now root2 is the last one.
    let res = root2_session
        .delete(&format!("/api/v1/users/{}", root2["id"].as_str().unwrap()))
        .await;
    expect(res, StatusCode::BAD_REQUEST).await;
}

async fn deleting_a_user_deletes_their_keys(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (ivy_id, ivy) = app.create_user(&admin, "ivy").await;
    let (key_id, key) = app.create_key(&ivy, "ivy").await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::OK);
    let res = app
        .as_session(&admin)
        .delete(&format!("/api/v1/users/{ivy_id}"))
        .await;
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
        .as_session(&admin)
        .patch_json(
            &format!("/api/v1/users/{jo_id}"),
            &json!({"is_active": false}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(app.whoami_status(&key).await, StatusCode::UNAUTHORIZED);
    let session = app.as_session(&jo).get("/api/v1/users/whoami").await;
    expect(session, StatusCode::UNAUTHORIZED).await;
    let login = app
        .anon()
        .post_form(
            "/api/v1/login",
            &[("username", "jo"), ("password", "jo-password")],
        )
        .await;
    expect(login, StatusCode::UNAUTHORIZED).await;
}

async fn password_change_ends_other_sessions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (kim_id, first) = app.create_user(&admin, "kim").await;
    let second = app.login("kim", "kim-password").await;
    let res = app
        .as_session(&first)
        .patch_json(
            &format!("/api/v1/users/{kim_id}/reset-password"),
            &json!({"password": "kim-new-password", "current_password": "kim-password"}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    let whoami = "/api/v1/users/whoami";
    assert_eq!(
        app.as_session(&first).get(whoami).await.status(),
        StatusCode::OK,
        "the changing session stays"
    );
    assert_eq!(
        app.as_session(&second).get(whoami).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.login("kim", "kim-new-password").await;
}
