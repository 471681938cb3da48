//! Flows: owner-scoped CRUD on Langflow's routes, on both backends.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{expect, Backend, RequestHelper, TestApp};

crate::on_both_backends!(
    create_read_update_and_delete_a_flow,
    list_is_an_array_or_a_page,
    another_users_flow_is_404_everywhere,
    bad_flow_input_gets_clear_errors,
);

async fn create_read_update_and_delete_a_flow(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let data = json!({"nodes": [{"id": "ChatInput-1", "data": {"x": 1.5}}], "edges": []});
    let created = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({
                    "name": "Support bot",
                    "description": "answers tickets",
                    "endpoint_name": "support-bot",
                    "data": data,
                    "upstream": {
                        "url": "https://langflow.example.com/api/v1/run/abc?stream=false",
                        "credential": {"provider": "generic", "as": "header", "header": "X-API-Key"}
                    }
                }),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(created["name"], "Support bot");
    assert_eq!(created["description"], "answers tickets");
    assert_eq!(created["endpoint_name"], "support-bot");
    assert_eq!(created["data"], data);
    assert_eq!(created["access"], "private");
    assert_eq!(
        created["upstream"],
        json!({
            "url": "https://langflow.example.com/api/v1/run/abc?stream=false",
            "method": "POST",
            "credential": {"provider": "generic", "as": "header", "header": "x-api-key"}
        })
    );
    for field in ["user_id", "created_at", "updated_at"] {
        assert!(created[field].is_string(), "missing {field}");
    }
    // Saves add `warnings` (the generic credential is not stored); reads do not.
    let mut created = created;
    let warnings = created.as_object_mut().unwrap().remove("warnings");
    assert_eq!(warnings.unwrap()[0]["code"], "credential_missing");

    let read = expect(
        app.as_session(&token)
            .get(&format!("/api/v1/flows/{id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read, created);

    let patched = expect(
        app.as_session(&token)
            .patch_json(
                &format!("/api/v1/flows/{id}"),
                &json!({"name": "Renamed", "description": null, "upstream": null, "access": "public"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["upstream"], Value::Null);
    assert_eq!(patched["access"], "public");
    // Untouched fields stay.
    assert_eq!(patched["endpoint_name"], "support-bot");
    assert_eq!(patched["data"], data);

    let deleted = expect(
        app.as_session(&token)
            .delete(&format!("/api/v1/flows/{id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(deleted["message"], "Flow deleted successfully");
    expect(
        app.as_session(&token)
            .get(&format!("/api/v1/flows/{id}"))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // `data` comes back as the very text given: key order, spacing, numbers.
    let raw = r#"{"z": 1,  "a": [1.50, 2e3, {"y": null, "b": "é"}]}"#;
    let res = app
        .as_session(&token)
        .request(Method::POST, "/api/v1/flows/")
        .header("content-type", "application/json")
        .body(format!(r#"{{"name": "raw", "data": {raw}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let raw_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let text = app
        .as_session(&token)
        .get(&format!("/api/v1/flows/{raw_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains(&format!(r#""data":{raw}"#)), "{text}");
    let cleared = expect(
        app.as_session(&token)
            .patch_json(&format!("/api/v1/flows/{raw_id}"), &json!({"data": null}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["data"], Value::Null);

    // The endpoint name is free again.
    expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "again", "endpoint_name": "support-bot"}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
}

async fn list_is_an_array_or_a_page(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    for n in 0..5 {
        expect(
            app.as_session(&token)
                .post_json("/api/v1/flows/", &json!({"name": format!("f{n}")}))
                .await,
            StatusCode::CREATED,
        )
        .await;
    }
    let all = expect(
        app.as_session(&token).get("/api/v1/flows/").await,
        StatusCode::OK,
    )
    .await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f0", "f1", "f2", "f3", "f4"]);
    let page = expect(
        app.as_session(&token)
            .get("/api/v1/flows/?get_all=false&page=2&size=2")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["page"], 2);
    assert_eq!(page["size"], 2);
    assert_eq!(page["pages"], 3);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f2", "f3"]);
    expect(
        app.as_session(&token)
            .get("/api/v1/flows/?get_all=false&page=0&size=2")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

async fn another_users_flow_is_404_everywhere(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, alice) = app.create_user(&admin, "alice").await;
    let (_, bob) = app.create_user(&admin, "bob").await;
    let flow = expect(
        app.as_session(&alice)
            .post_json("/api/v1/flows/", &json!({"name": "alice's"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let path = format!("/api/v1/flows/{}", flow["id"].as_str().unwrap());
    let as_bob = app.as_session(&bob);
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"name": "mine now"}))),
        (Method::DELETE, None),
    ] {
        let res = match &body {
            Some(body) => as_bob.send_json(method, &path, body).await,
            None => as_bob.send(method, &path).await,
        };
        let body = expect(res, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "Flow not found");
    }
    // Not even a superuser sees it through these routes.
    expect(
        app.as_session(&admin).get(&path).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let bobs = expect(
        app.as_session(&bob).get("/api/v1/flows/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(bobs, json!([]));
    // Still there, unchanged, for Alice.
    let read = expect(app.as_session(&alice).get(&path).await, StatusCode::OK).await;
    assert_eq!(read["name"], "alice's");
    // Without credentials: 401.
    let res = app.anon().get("/api/v1/flows/").await;
    expect(res, StatusCode::UNAUTHORIZED).await;
}

async fn bad_flow_input_gets_clear_errors(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"name": "x", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        (
            json!({"description": "no name"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"name": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"name": "x", "endpoint_name": "has space"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "endpoint_name",
        ),
        (
            json!({"name": "x", "endpoint_name": uuid::Uuid::new_v4().to_string()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "UUID",
        ),
        (
            json!({"name": "x", "access": "everyone"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "access",
        ),
        (
            json!({"name": "x", "upstream": {"url": "not a url"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "upstream.url",
        ),
        (
            json!({"name": "x", "upstream": {"url": "file:///etc/passwd"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "upstream.url",
        ),
        (
            json!({"name": "x", "upstream": {"url": "https://a.example", "method": "TRACE"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "upstream.method",
        ),
        (
            json!({"name": "x", "upstream": {"url": "https://a.example", "timeout": 5}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        (
            json!({"name": "x", "upstream": {"url": "https://a.example",
                "credential": {"provider": "openai", "variable": "K"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "exactly one",
        ),
        (
            json!({"name": "x", "upstream": {"url": "https://a.example",
                "credential": {"provider": "generic", "as": "header"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "header",
        ),
        (
            json!({"name": "x", "upstream": {"url": "https://a.example",
                "credential": {"provider": "vault", "as": "bearer"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "provider",
        ),
    ];
    for (body, status, needle) in cases {
        let res = app
            .as_session(&token)
            .post_json("/api/v1/flows/", &body)
            .await;
        let answer = expect(res, status).await;
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{body} gave {detail:?}");
    }

    // Duplicate endpoint names: 409, on create and on update.
    let first = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "a", "endpoint_name": "taken"}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    let dup = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "b", "endpoint_name": "taken"}),
            )
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(dup["detail"].as_str().unwrap().contains("taken"));
    let second = expect(
        app.as_session(&token)
            .post_json("/api/v1/flows/", &json!({"name": "c"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let path = format!("/api/v1/flows/{}", second["id"].as_str().unwrap());
    expect(
        app.as_session(&token)
            .patch_json(&path, &json!({"endpoint_name": "taken"}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    expect(
        app.as_session(&token)
            .patch_json(&path, &json!({"user_id": first["user_id"]}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    expect(
        app.as_session(&token).get("/api/v1/flows/not-a-uuid").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    expect(
        app.as_session(&token).post("/api/v1/flows/").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}
