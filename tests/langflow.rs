//! Langflow's own surface: its flow model on `/api/v1/flows/`, and a flow
//! whose upstream is a Langflow server (the stand-in in
//! `common::langflow`) answering run, streamed run, advanced run, webhook
//! and file upload through the gateway, on both backends.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::langflow::StandInLangflow;
use crate::common::upstream::FakeUpstream;
use crate::common::{expect, Backend, RequestHelper, TestApp};
use crate::gateway::{create_flow, store_generic_secret};

crate::on_both_backends!(
    langflows_flow_fields_are_stored_and_returned,
    the_list_answers_as_langflow_does,
    langflow_upstreams_are_validated,
    runs_reach_langflow_with_its_key_and_its_flow_id,
    streamed_runs_arrive_as_langflow_events,
    uploads_stream_to_langflow_and_their_path_works_in_a_run,
    uploads_are_bounded_and_checked_before_anything_is_sent,
    an_abandoned_upload_is_cut_off_upstream,
    webhook_and_advanced_run_reach_langflow,
    langflow_routes_keep_the_run_rules,
    put_creates_or_replaces_the_callers_flow_by_id,
);

const ALLOW_PRIVATE: (&str, &str) = ("KEYGATE_ALLOW_PRIVATE_UPSTREAMS", "true");

/// A server with the admin's Langflow key stored, a flow in front of the
/// stand-in's flow and a key: (app, admin token, flow, key).
pub async fn langflow_setup(
    backend: Backend,
    langflow: &StandInLangflow,
    extra: &[(&str, &str)],
) -> (TestApp, String, Value, String) {
    let mut env = vec![ALLOW_PRIVATE];
    env.extend_from_slice(extra);
    let app = TestApp::start_with(backend, &env).await;
    let token = app.admin_token().await;
    store_generic_secret(&app, &token, &langflow.key, None).await;
    let flow = create_flow(
        &app,
        &token,
        json!({
            "name": "chat",
            "endpoint_name": "chat",
            "upstream": {
                "langflow": {"url": langflow.base, "flow_id": langflow.flow_id},
                "credential": {"provider": "generic"}
            }
        }),
    )
    .await;
    let (_, key) = app.create_key(&token, "script").await;
    (app, token, flow, key)
}

fn id(flow: &Value) -> &str {
    flow["id"].as_str().unwrap()
}

/// The chat text of a Langflow run result.
fn chat_text(result: &Value) -> &str {
    result["outputs"][0]["outputs"][0]["results"]["message"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no chat text in {result}"))
}

/// The multipart body of one file in the field `file`, as a browser or
/// Langflow's JavaScript client sends it.
fn multipart(name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("----keygate{}", uuid::Uuid::new_v4().simple());
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn langflows_flow_fields_are_stored_and_returned(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let folder = uuid::Uuid::new_v4().to_string();
    // What Langflow's Python SDK sends for `create_flow(FlowCreate(...))`,
    // plus the rest of Langflow's `FlowCreate`.
    let created = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({
                    "name": "From the SDK",
                    "description": "d",
                    "data": {"nodes": [], "edges": []},
                    "is_component": false,
                    "endpoint_name": "from-sdk",
                    "tags": ["chat", "demo"],
                    "folder_id": folder,
                    "icon": "bot",
                    "icon_bg_color": "#FF0000",
                    "gradient": "2",
                    "locked": true,
                    "mcp_enabled": true,
                    "webhook": true,
                    "access_type": "PUBLIC",
                    "updated_at": "2024-12-30T15:48:01.519Z",
                    "user_id": uuid::Uuid::new_v4().to_string(),
                    "fs_path": "/etc/passwd",
                    "action_name": "a",
                    "action_description": "b",
                }),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["is_component"], false);
    assert_eq!(created["tags"], json!(["chat", "demo"]));
    assert_eq!(created["folder_id"], folder);
    assert_eq!(created["icon"], "bot");
    assert_eq!(created["icon_bg_color"], "#FF0000");
    assert_eq!(created["gradient"], "2");
    assert_eq!(created["locked"], true);
    assert_eq!(created["mcp_enabled"], true);
    assert_eq!(created["webhook"], true);
    assert_eq!(created["access_type"], "PUBLIC");
    assert_eq!(created["access"], "public");
    // The owner is the caller, whatever the body says; the times are ours.
    let me = expect(
        app.as_session(&token).get("/api/v1/users/whoami").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(created["user_id"], me["id"]);
    assert_ne!(created["updated_at"], "2024-12-30T15:48:01.519Z");
    assert!(!created.to_string().contains("/etc/passwd"));

    let path = format!("/api/v1/flows/{}", id(&created));
    let read = expect(app.as_session(&token).get(&path).await, StatusCode::OK).await;
    // A save also answers its `warnings`; a read does not.
    let mut saved = created.clone();
    assert_eq!(
        saved.as_object_mut().unwrap().remove("warnings"),
        Some(json!([]))
    );
    assert_eq!(read, saved);

    // Langflow's `FlowUpdate`: flags, texts and the access type change;
    // a null flag is left as it is, a null text is cleared.
    let updated = expect(
        app.as_session(&token)
            .patch_json(
                &path,
                &json!({
                    "locked": false,
                    "mcp_enabled": null,
                    "access_type": "PRIVATE",
                    "icon": null,
                    "tags": ["one"],
                    "folder_id": null,
                    "fs_path": "x",
                    "action_name": "y",
                }),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["locked"], false);
    assert_eq!(updated["mcp_enabled"], true);
    assert_eq!(updated["access"], "private");
    assert_eq!(updated["access_type"], "PRIVATE");
    assert_eq!(updated["icon"], Value::Null);
    assert_eq!(updated["tags"], json!(["one"]));
    assert_eq!(updated["folder_id"], Value::Null);
    assert_eq!(updated["webhook"], true);

    // A flow created with only a name has Langflow's defaults.
    let plain = expect(
        app.as_session(&token)
            .post_json("/api/v1/flows/", &json!({"name": "plain"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    for flag in ["is_component", "locked", "mcp_enabled", "webhook"] {
        assert_eq!(plain[flag], false, "{flag}");
    }
    assert_eq!(plain["access_type"], "PRIVATE");
    assert_eq!(plain["tags"], Value::Null);

    // Wrong values of Langflow's fields get the same clear 422s; a field
    // neither Langflow nor keygate knows is still refused (a typo must
    // not pass silently), and nothing is stored.
    for (body, needle) in [
        (
            json!({"name": "x", "icon_bg_color": "red"}),
            "icon_bg_color",
        ),
        (json!({"name": "x", "folder_id": "not-a-uuid"}), "folder_id"),
        (json!({"name": "x", "access_type": "SHARED"}), "access_type"),
        (
            json!({"name": "x", "access": "public", "access_type": "PRIVATE"}),
            "disagree",
        ),
        (json!({"name": "x", "tags": "chat"}), "tags"),
        (
            json!({"name": "x", "is_component": "yes"}),
            "expected a boolean",
        ),
        (json!({"name": "x", "upstraem": {}}), "unknown field"),
    ] {
        let answer = expect(
            app.as_session(&token)
                .post_json("/api/v1/flows/", &body)
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{body} gave {detail:?}");
    }
    let answer = expect(
        app.as_session(&token)
            .patch_json(&path, &json!({"user_id": me["id"]}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(answer["detail"].as_str().unwrap().contains("user_id"));
    let all = expect(
        app.as_session(&token).get("/api/v1/flows/").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all.as_array().unwrap().len(), 2);
}

async fn the_list_answers_as_langflow_does(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let folder = uuid::Uuid::new_v4().to_string();
    for (name, component, in_folder) in [("a", false, true), ("b", true, true), ("c", false, false)]
    {
        let mut body = json!({"name": name, "is_component": component, "data": {"nodes": []}});
        if in_folder {
            body["folder_id"] = json!(folder);
        }
        expect(
            app.as_session(&token)
                .post_json("/api/v1/flows/", &body)
                .await,
            StatusCode::CREATED,
        )
        .await;
    }
    let list = |query: &str| {
        let app = &app;
        let token = &token;
        let path = format!("/api/v1/flows/{query}");
        async move { expect(app.as_session(token).get(&path).await, StatusCode::OK).await }
    };
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    // get_all=true (what the Python SDK sends with `get_all=True`): the
    // whole list as an array, page and size ignored.
    let all = list("?get_all=true&page=1&size=1&remove_example_flows=false").await;
    assert_eq!(names(&all), ["a", "b", "c"]);
    // get_all=false: a page.
    let page = list("?get_all=false&page=2&size=2").await;
    assert_eq!(names(&page["items"]), ["c"]);
    assert_eq!(
        (
            page["total"].clone(),
            page["page"].clone(),
            page["size"].clone(),
            page["pages"].clone()
        ),
        (json!(3), json!(2), json!(2), json!(2))
    );
    // Without get_all, page or size ask for a page; nothing, the array.
    assert_eq!(list("?size=1").await["total"], 3);
    assert_eq!(names(&list("").await), ["a", "b", "c"]);
    // Filters: a folder, components only.
    assert_eq!(
        names(&list(&format!("?folder_id={folder}")).await),
        ["a", "b"]
    );
    assert_eq!(names(&list("?components_only=true").await), ["b"]);
    let filtered = list(&format!("?get_all=false&folder_id={folder}&size=10")).await;
    assert_eq!(filtered["total"], 2);
    // Headers: no data, no upstream.
    let headers = list("?header_flows=true").await;
    assert_eq!(names(&headers), ["a", "b", "c"]);
    assert!(headers[0].get("data").is_none());
    assert!(headers[0].get("upstream").is_none());
    assert_eq!(headers[1]["is_component"], true);
    // A bad folder id is a clear 422.
    let answer = expect(
        app.as_session(&token)
            .get("/api/v1/flows/?folder_id=nope")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(answer["detail"].as_str().unwrap().contains("folder_id"));
}

async fn langflow_upstreams_are_validated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let token = app.admin_token().await;
    let lf_id = uuid::Uuid::new_v4().to_string();
    let created = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "lf", "upstream": {
                    "langflow": {"url": "https://lf.example.com:7860/", "flow_id": lf_id.to_uppercase()},
                    "credential": {"provider": "generic"}
                }}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    // Normalised; the credential goes as Langflow's own key header.
    assert_eq!(
        created["upstream"],
        json!({
            "langflow": {"url": "https://lf.example.com:7860", "flow_id": lf_id},
            "credential": {"provider": "generic", "as": "header", "header": "x-api-key"}
        })
    );
    // An explicit injection is kept.
    let bearer = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "lf2", "upstream": {
                    "langflow": {"url": "https://lf.example.com", "flow_id": lf_id},
                    "credential": {"provider": "generic", "as": "bearer"}
                }}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(bearer["upstream"]["credential"]["as"], "bearer");
    for (upstream, needle) in [
        (
            json!({"url": "https://a.example", "langflow": {"url": "https://lf.example.com", "flow_id": lf_id}}),
            "exactly one",
        ),
        (json!({}), "exactly one"),
        (
            json!({"langflow": {"url": "https://lf.example.com", "flow_id": "chat"}}),
            "flow_id",
        ),
        (
            json!({"langflow": {"url": "ftp://lf.example.com", "flow_id": lf_id}}),
            "upstream.langflow.url",
        ),
        (
            json!({"langflow": {"url": "https://u:p@lf.example.com", "flow_id": lf_id}}),
            "upstream.langflow.url",
        ),
        (
            json!({"langflow": {"url": "https://lf.example.com?a=1", "flow_id": lf_id}}),
            "query",
        ),
        (
            json!({"langflow": {"url": "https://lf.example.com", "flow_id": lf_id}, "method": "GET"}),
            "method",
        ),
        (
            json!({"langflow": {"url": "https://lf.example.com", "flow_id": lf_id, "key": "sk-x"}}),
            "unknown field",
        ),
    ] {
        let answer = expect(
            app.as_session(&token)
                .post_json(
                    "/api/v1/flows/",
                    &json!({"name": "bad", "upstream": upstream}),
                )
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{upstream} gave {detail:?}");
    }
    // The SSRF rule applies to the Langflow server as to any upstream
    // (this server does not allow private upstreams).
    let answer = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/flows/",
                &json!({"name": "inside", "upstream": {
                    "langflow": {"url": "http://127.0.0.1:7860", "flow_id": lf_id}}}),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(answer["detail"]
        .as_str()
        .unwrap()
        .contains("upstream.langflow.url is not allowed"));
}

async fn runs_reach_langflow_with_its_key_and_its_flow_id(backend: Backend) {
    let mut langflow = StandInLangflow::start();
    let (app, _token, flow, key) = langflow_setup(backend, &langflow, &[]).await;
    let flow_id = id(&flow);
    for identifier in [flow_id, "chat"] {
        let res = app
            .as_key(&key)
            .request(Method::POST, &format!("/api/v1/run/{identifier}"))
            .header("cookie", "keygate_session=abc")
            .json(&json!({"input_value": "hello", "input_type": "chat", "output_type": "chat"}))
            .send()
            .await
            .unwrap();
        let result = expect(res, StatusCode::OK).await;
        assert_eq!(chat_text(&result), "echo: hello");
        // Langflow's default session id is its flow id: the caller sees
        // keygate's, and Langflow's id appears nowhere.
        assert_eq!(result["session_id"], flow_id);
        assert!(!result.to_string().contains(&langflow.flow_id));
        let got = langflow.next_request().await;
        assert_eq!(got.path, format!("/api/v1/run/{}", langflow.flow_id));
        assert_eq!(got.header("x-api-key"), Some(langflow.key.as_str()));
        assert_eq!(got.header("cookie"), None);
        assert!(!got.everything().contains(&key));
    }
    // keygate's id in a body (a session id handed back) is Langflow's
    // upstream; another session id passes through untouched.
    let result = expect(
        app.as_key(&key)
            .post_json(
                &format!("/api/v1/run/{flow_id}"),
                &json!({"input_value": "again", "session_id": flow_id}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(result["session_id"], flow_id);
    let got = langflow.next_request().await;
    let sent: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent["session_id"], langflow.flow_id);
    let result = expect(
        app.as_key_in_query(&key)
            .post_json(
                &format!("/api/v1/run/{flow_id}"),
                &json!({"input_value": "x", "session_id": "my-session"}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(result["session_id"], "my-session");
    let got = langflow.next_request().await;
    assert_eq!(got.query, "");
    // A wrong Langflow key stored: Langflow's 403 comes back as it is.
    let token = app.admin_token().await;
    store_generic_secret(&app, &token, "sk-not-langflows", None).await;
    let res = app
        .as_key(&key)
        .post_json(
            &format!("/api/v1/run/{flow_id}"),
            &json!({"input_value": "x"}),
        )
        .await;
    let answer = expect(res, StatusCode::FORBIDDEN).await;
    assert_eq!(answer["detail"], "Invalid or missing API key");
}

async fn streamed_runs_arrive_as_langflow_events(backend: Backend) {
    let mut langflow = StandInLangflow::start();
    let (app, _token, flow, key) = langflow_setup(backend, &langflow, &[]).await;
    let flow_id = id(&flow);
    // As the JavaScript client streams (`?stream=true`) and as the Python
    // SDK does (`"stream": true` in the body).
    for (query, body) in [
        ("?stream=true", json!({"input_value": "one two three"})),
        ("", json!({"input_value": "one two three", "stream": true})),
    ] {
        let res = app
            .as_key(&key)
            .post_json(&format!("/api/v1/run/{flow_id}{query}"), &body)
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = res.text().await.unwrap();
        let events: Vec<Value> = text
            .split("\n\n")
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"add_message"));
        assert_eq!(kinds.last(), Some(&"end"));
        let tokens: String = events
            .iter()
            .filter(|e| e["event"] == "token")
            .map(|e| e["data"]["chunk"].as_str().unwrap())
            .collect();
        assert_eq!(tokens, "echo: one two three");
        let end = events.last().unwrap();
        assert_eq!(chat_text(&end["data"]["result"]), "echo: one two three");
        assert_eq!(end["data"]["result"]["session_id"], flow_id);
        assert_eq!(events[0]["data"]["flow_id"], flow_id);
        assert!(!text.contains(&langflow.flow_id));
        let got = langflow.next_request().await;
        assert_eq!(got.query, query.trim_start_matches('?'));
    }
}

async fn uploads_stream_to_langflow_and_their_path_works_in_a_run(backend: Backend) {
    let mut langflow = StandInLangflow::start();
    let (app, _token, flow, key) = langflow_setup(backend, &langflow, &[]).await;
    let flow_id = id(&flow);
    let (content_type, body) = multipart("notes.txt", b"the file's words");
    let res = app
        .as_key(&key)
        .request(Method::POST, &format!("/api/v1/files/upload/{flow_id}"))
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let answer = expect(res, StatusCode::CREATED).await;
    assert_eq!(answer["flowId"], flow_id);
    let file_path = answer["file_path"].as_str().unwrap().to_string();
    assert!(file_path.starts_with(&format!("{flow_id}/")), "{file_path}");
    assert!(file_path.ends_with("_notes.txt"));
    let got = langflow.next_request().await;
    assert_eq!(
        got.path,
        format!("/api/v1/files/upload/{}", langflow.flow_id)
    );
    assert_eq!(got.header("x-api-key"), Some(langflow.key.as_str()));
    assert_eq!(got.body, body, "the multipart body arrives byte for byte");
    assert!(!got.everything().contains(&key));

    // The path goes back in a tweak, as Langflow's clients do, and names
    // the file on Langflow.
    let result = expect(
        app.as_key(&key)
            .post_json(
                &format!("/api/v1/run/{flow_id}"),
                &json!({"input_value": "read it", "tweaks": {"File-1": {"path": [file_path]}}}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        chat_text(&result),
        format!("echo: read it | {file_path}: the file's words")
    );
    let got = langflow.next_request().await;
    let sent = String::from_utf8(got.body).unwrap();
    assert!(sent.contains(&langflow.flow_id) && !sent.contains(flow_id));
}

async fn uploads_are_bounded_and_checked_before_anything_is_sent(backend: Backend) {
    let mut langflow = StandInLangflow::start();
    let (app, _token, flow, key) =
        langflow_setup(backend, &langflow, &[("KEYGATE_MAX_UPLOAD_BYTES", "1000")]).await;
    let path = format!("/api/v1/files/upload/{}", id(&flow));
    // A declared length above the limit: refused before the upstream.
    let (content_type, body) = multipart("big.bin", &[b'x'; 2000]);
    let res = app
        .as_key(&key)
        .request(Method::POST, &path)
        .header("content-type", &content_type)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let answer = expect(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(answer["detail"]
        .as_str()
        .unwrap()
        .contains("KEYGATE_MAX_UPLOAD_BYTES"));
    // A chunked body without a length that outgrows it: cut off, 413.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(300).map(|c| Ok(c.to_vec())).collect();
    let res = app
        .as_key(&key)
        .request(Method::POST, &path)
        .header("content-type", &content_type)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    expect(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    // The stand-in may have seen the start of that one; it stored nothing.
    // A body that is not multipart: 422, nothing sent.
    langflow.drain();
    let res = app
        .as_key(&key)
        .request(Method::POST, &path)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let answer = expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(answer["detail"].as_str().unwrap().contains("multipart"));
    // Within the limit: through.
    let (content_type, body) = multipart("small.txt", b"fits");
    let res = app
        .as_key(&key)
        .request(Method::POST, &path)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let answer = expect(res, StatusCode::CREATED).await;
    assert!(answer["file_path"]
        .as_str()
        .unwrap()
        .ends_with("_small.txt"));
    let got = langflow.next_request().await;
    assert!(got.path.starts_with("/api/v1/files/upload/"));
    assert!(String::from_utf8_lossy(&got.body).contains("fits"));
}

async fn an_abandoned_upload_is_cut_off_upstream(backend: Backend) {
    let mut langflow = StandInLangflow::start();
    let (app, _token, flow, key) = langflow_setup(backend, &langflow, &[]).await;
    let (content_type, body) = multipart("endless.txt", b"the start of a long file");
    let head = body[..body.len() / 2].to_vec();
    // The rest of the body never comes (until the test is over).
    let (hold, held) = tokio::sync::oneshot::channel::<()>();
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) });
    let never = futures_util::stream::once(async move {
        let _ = held.await;
        Err(std::io::Error::other("the test ended"))
    });
    let request = app
        .as_key(&key)
        .request(Method::POST, &format!("/api/v1/files/upload/{}", id(&flow)))
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(futures_util::StreamExt::chain(
            first, never,
        )));
    let upload = tokio::spawn(request.send());
    // The start of the body reaches Langflow before the caller has sent
    // the rest: it is streamed, not gathered first.
    assert_eq!(langflow.next_body_event().await, "body started");
    // The caller gives up: the upload to Langflow is cut off with it.
    upload.abort();
    assert_eq!(langflow.next_body_event().await, "body broke off");
    drop(hold);
}

async fn webhook_and_advanced_run_reach_langflow(backend: Backend) {
    let mut langflow = StandInLangflow::start();
    let (app, _token, flow, key) = langflow_setup(backend, &langflow, &[]).await;
    let flow_id = id(&flow);
    let res = app
        .as_key(&key)
        .post_json(
            &format!("/api/v1/webhook/{flow_id}"),
            &json!({"event": "ticket.created", "flow": flow_id}),
        )
        .await;
    let answer = expect(res, StatusCode::ACCEPTED).await;
    assert_eq!(answer["status"], "in progress");
    let got = langflow.next_request().await;
    assert_eq!(got.path, format!("/api/v1/webhook/{}", langflow.flow_id));
    assert_eq!(got.header("x-api-key"), Some(langflow.key.as_str()));
    let sent: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent["event"], "ticket.created");
    assert_eq!(sent["flow"], langflow.flow_id);

    let result = expect(
        app.as_key(&key)
            .post_json(
                "/api/v1/run/advanced/chat",
                &json!({"inputs": [{"components": [], "input_value": "adv"}], "outputs": [], "tweaks": {}}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(chat_text(&result), "echo: adv");
    assert_eq!(result["session_id"], flow_id);
    let got = langflow.next_request().await;
    assert_eq!(
        got.path,
        format!("/api/v1/run/advanced/{}", langflow.flow_id)
    );
}

async fn langflow_routes_keep_the_run_rules(backend: Backend) {
    let mut langflow = StandInLangflow::start();
    let (app, token, flow, key) = langflow_setup(backend, &langflow, &[]).await;
    let flow_id = id(&flow).to_string();
    let (content_type, body) = multipart("a.txt", b"a");
    let upload = |key: Option<&str>, flow: &str| {
        let caller = match key {
            Some(key) => app.as_key(key),
            None => app.anon(),
        };
        caller
            .request(Method::POST, &format!("/api/v1/files/upload/{flow}"))
            .header("content-type", content_type.clone())
            .body(body.clone())
            .send()
    };
    // No key, a wrong key: 401 on every route, nothing sent.
    let wrong = format!("sk-{}", "A".repeat(43));
    for caller_key in [None, Some(wrong.as_str())] {
        expect(
            upload(caller_key, &flow_id).await.unwrap(),
            StatusCode::UNAUTHORIZED,
        )
        .await;
        for route in ["webhook", "run/advanced", "run"] {
            let caller = match caller_key {
                Some(k) => app.as_key(k),
                None => app.anon(),
            };
            let res = caller
                .post_json(&format!("/api/v1/{route}/{flow_id}"), &json!({}))
                .await;
            expect(res, StatusCode::UNAUTHORIZED).await;
        }
    }
    // Another user's key: 404, as for a flow that does not exist.
    let (_, bob) = app.create_user(&token, "bob").await;
    let (_, bobs_key) = app.create_key(&bob, "bob's").await;
    let answer = expect(
        upload(Some(&bobs_key), &flow_id).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        answer["detail"],
        format!("Flow identifier {flow_id} not found")
    );
    let res = app
        .as_key(&bobs_key)
        .post_json(&format!("/api/v1/webhook/{flow_id}"), &json!({}))
        .await;
    expect(res, StatusCode::NOT_FOUND).await;
    // A key bound to another flow: 404 too.
    let other = create_flow(&app, &token, json!({"name": "other"})).await;
    let bound = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/api_key/",
                &json!({"name": "bound", "flow_id": other["id"]}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let bound_key = bound["api_key"].as_str().unwrap();
    expect(
        upload(Some(bound_key), &flow_id).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(langflow.received_nothing(), "nothing reached Langflow");

    // A key bound to this flow uploads to it.
    let own_bound = expect(
        app.as_session(&token)
            .post_json(
                "/api/v1/api_key/",
                &json!({"name": "bound here", "flow_id": flow_id}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    let own_bound_key = own_bound["api_key"].as_str().unwrap().to_string();
    expect(
        upload(Some(&own_bound_key), &flow_id).await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    langflow.next_request().await;
    // A public flow takes webhooks without a key, as it runs without one,
    // but not while a key is bound to it; once that key is gone it does.
    let path = format!("/api/v1/flows/{flow_id}");
    expect(
        app.as_session(&token)
            .patch_json(&path, &json!({"access_type": "PUBLIC"}))
            .await,
        StatusCode::OK,
    )
    .await;
    let res = app
        .anon()
        .post_json(&format!("/api/v1/webhook/{flow_id}"), &json!({}))
        .await;
    expect(res, StatusCode::UNAUTHORIZED).await;
    let bound_id = own_bound["id"].as_str().unwrap();
    expect(
        app.as_session(&token)
            .delete(&format!("/api/v1/api_key/{bound_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    let res = app
        .anon()
        .post_json(&format!("/api/v1/webhook/{flow_id}"), &json!({}))
        .await;
    expect(res, StatusCode::ACCEPTED).await;
    let got = langflow.next_request().await;
    assert_eq!(got.header("x-api-key"), Some(langflow.key.as_str()));

    // A flow with a single upstream URL runs, but has no Langflow routes.
    let fake = FakeUpstream::start();
    let single = create_flow(
        &app,
        &token,
        json!({"name": "single", "upstream": {"url": fake.url("/run")}}),
    )
    .await;
    let single_id = id(&single);
    let answer = expect(
        upload(Some(&key), single_id).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(answer["detail"]
        .as_str()
        .unwrap()
        .contains("Langflow server"));
    for route in ["webhook", "run/advanced"] {
        let res = app
            .as_key(&key)
            .post_json(&format!("/api/v1/{route}/{single_id}"), &json!({}))
            .await;
        expect(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let res = app
        .as_key(&key)
        .post_json(&format!("/api/v1/run/{single_id}"), &json!({}))
        .await;
    expect(res, StatusCode::OK).await;

    // An unreachable Langflow: 502 naming it, for an upload as for a run.
    let gone = create_flow(
        &app,
        &token,
        json!({"name": "gone", "upstream": {"langflow": {
            "url": "http://127.0.0.1:9", "flow_id": langflow.flow_id}}}),
    )
    .await;
    let answer = expect(
        upload(Some(&key), id(&gone)).await.unwrap(),
        StatusCode::BAD_GATEWAY,
    )
    .await;
    assert!(answer["detail"].as_str().unwrap().contains("127.0.0.1"));
    assert!(langflow.received_nothing());
}

/// Langflow's upsert: `PUT /api/v1/flows/{id}` creates the caller's flow
/// under that id (201), replaces it on the next PUT (200, creation time
/// kept), and another user's id is a 404 that changes nothing.
async fn put_creates_or_replaces_the_callers_flow_by_id(backend: Backend) {
    let app = TestApp::start(backend).await;
    let admin = app.admin_token().await;
    let (_, token) = app.create_user(&admin, "ulla").await;
    let stable = uuid::Uuid::new_v4().to_string();
    let path = format!("/api/v1/flows/{stable}");
    let created = expect(
        app.as_session(&token)
            .put_json(
                &path,
                &json!({"name": "first", "endpoint_name": "upsert-me", "tags": ["a"]}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["id"], stable.as_str());
    assert_eq!(created["endpoint_name"], "upsert-me");
    let replaced = expect(
        app.as_session(&token)
            .put_json(&path, &json!({"name": "second", "locked": true}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(replaced["id"], stable.as_str());
    assert_eq!(replaced["name"], "second");
    assert_eq!(replaced["locked"], true);
    // A replacement, not a patch: what the body leaves out is gone.
    assert_eq!(replaced["endpoint_name"], Value::Null);
    assert_eq!(replaced["tags"], Value::Null);
    assert_eq!(replaced["created_at"], created["created_at"]);
    let read = expect(app.as_session(&token).get(&path).await, StatusCode::OK).await;
    assert_eq!(read["name"], "second");

    // Someone else's id: 404, and the flow is untouched.
    let (_, other) = app.create_user(&admin, "vic").await;
    let refused = expect(
        app.as_session(&other)
            .put_json(&path, &json!({"name": "taken over"}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(refused["detail"], "Flow not found");
    let read = expect(app.as_session(&token).get(&path).await, StatusCode::OK).await;
    assert_eq!(read["name"], "second");
    // Bad input loses nothing either.
    expect(
        app.as_session(&token)
            .put_json(&path, &json!({"name": ""}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let read = expect(app.as_session(&token).get(&path).await, StatusCode::OK).await;
    assert_eq!(read["name"], "second");
}
