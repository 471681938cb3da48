//! Abuse resistance in the domains: dates RFC 3339 can write back, masks
//! that show at most 4 characters, IPv6 forms of private IPv4 addresses
//! refused as upstreams, public endpoint names that cannot be squatted.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::upstream::FakeUpstream;
use crate::common::{expect, Backend, RequestHelper, TestApp};
use crate::gateway::create_flow;

crate::on_both_backends!(
    dates_outside_1970_to_9999_are_refused,
    masks_show_at_most_the_last_four_characters,
    ipv6_forms_of_private_ipv4_addresses_are_refused_as_upstreams,
    a_public_endpoint_name_has_one_holder,
);

async fn dates_outside_1970_to_9999_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    for expires_at in [
        "+10000-01-01T00:00:00Z",
        "10000-01-01",
        "+10000-01-01T00:00:00",
    ] {
        let res = app
            .as_session(&admin)
            .post_json(
                "/api/v1/api_key/",
                &json!({"name": "far", "expires_at": expires_at}),
            )
            .await;
        let body = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(body["detail"].as_str().unwrap().contains("9999"), "{body}");
    }
    let res = app
        .as_session(&admin)
        .post_json(
            "/api/v1/api_key/",
            &json!({"name": "late", "expires_at": "9999-12-31T23:59:59Z"}),
        )
        .await;
    let key = expect(res, StatusCode::OK).await;
    assert_eq!(key["expires_at"], "9999-12-31T23:59:59Z");
}

async fn masks_show_at_most_the_last_four_characters(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let path = "/api/v1/providers/generic";
    for (secret, shown) in [
        ("Q7x9Lm2Pz4Kt", "********"),
        ("sk-Q7x9Lm2Pz4Kt", "sk-********"),
        ("sk-proj-0123456789abcdefWXYZ", "sk-proj-…WXYZ"),
        ("0123456789abcdefWXYZ", "…WXYZ"),
    ] {
        let res = app
            .as_session(&admin)
            .put_json(path, &json!({"secret_key": secret}))
            .await;
        assert_eq!(expect(res, StatusCode::OK).await["secret_key"], shown);
        let read = expect(app.as_session(&admin).get(path).await, StatusCode::OK).await;
        assert_eq!(read["secret_key"], shown);
    }
}

async fn ipv6_forms_of_private_ipv4_addresses_are_refused_as_upstreams(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    for url in [
        "http://[::ffff:0:7f00:1]/",
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::1]/",
        "http://[2002:a9fe:a9fe::1]/",
    ] {
        let res = app
            .as_session(&admin)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "f", "upstream": {"url": url}}),
            )
            .await;
        expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

async fn a_public_endpoint_name_has_one_holder(backend: Backend) {
    let mut upstream = FakeUpstream::start();
    let app = TestApp::start_with(backend, &[("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true")]).await;
    let admin = app.admin_token().await;
    let (_, alice) = app.create_user(&admin, "alice").await;
    let (_, bob) = app.create_user(&admin, "bob").await;
    let flow = |name: &str, access: &str, path: &str| {
        json!({"name": name, "endpoint_name": "shared-name", "access": access,
            "upstream": {"url": upstream.url(path)}})
    };
    let alices = create_flow(&app, &alice, flow("a", "public", "/alice")).await;
    let squat = app
        .as_session(&bob)
        .post_json("/api/v1/flows/", &flow("b", "public", "/bob"))
        .await;
    let body = expect(squat, StatusCode::CONFLICT).await;
    assert!(body["detail"].as_str().unwrap().contains("shared-name"));
    let bobs = create_flow(&app, &bob, flow("b", "private", "/bob")).await;
    let bobs_id = bobs["id"].as_str().unwrap().to_string();
    let make_public = app
        .as_session(&bob)
        .patch_json(
            &format!("/api/v1/flows/{bobs_id}"),
            &json!({"access": "public"}),
        )
        .await;
    expect(make_public, StatusCode::CONFLICT).await;

    let run_by_name = || async {
        app.anon()
            .post_json("/api/v1/run/shared-name", &json!({"inputs": {}}))
            .await
            .status()
    };
    assert_eq!(run_by_name().await, StatusCode::OK);
    assert_eq!(upstream.next_request().await.path, "/alice");

    // Alice closes hers: the name goes nowhere, certainly not to Bob's.
    let res = app
        .as_session(&alice)
        .patch_json(
            &format!("/api/v1/flows/{}", alices["id"].as_str().unwrap()),
            &json!({"access": "private"}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(run_by_name().await, StatusCode::UNAUTHORIZED);
    assert!(upstream.received_nothing());

    // Now the name is free among public flows: Bob may take it.
    let res = app
        .as_session(&bob)
        .patch_json(
            &format!("/api/v1/flows/{bobs_id}"),
            &json!({"access": "public"}),
        )
        .await;
    expect(res, StatusCode::OK).await;
    assert_eq!(run_by_name().await, StatusCode::OK);
    assert_eq!(upstream.next_request().await.path, "/bob");
}
