//! Langflow's real clients, unchanged, against keygate in front of the
//! stand-in Langflow: DataStax's JavaScript client
//! (`tests/clients/js/check.mjs`, installed from its lock file with
//! `npm ci --prefix tests/clients/js`) and Langflow's Python SDK
//! (`tests/clients/python/check_sdk.py`, run by the interpreter of a
//! virtual environment outside the source tree, `$TMPDIR/keygate-langflow-sdk`
//! unless `KEYGATE_TEST_LANGFLOW_SDK_PYTHON` names another). `.ci/run`
//! installs both. Each script checks the answers it gets; this side checks
//! what reached Langflow.

use std::path::{Path, PathBuf};

use crate::common::langflow::StandInLangflow;
use crate::common::upstream::Received;
use crate::common::{Backend, TestApp};
use crate::langflow::langflow_setup;

crate::on_both_backends!(
    javascript_client_works_unchanged,
    python_sdk_works_unchanged
);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python SDK's interpreter (see the module doc).
pub fn sdk_python() -> PathBuf {
    match std::env::var_os("KEYGATE_TEST_LANGFLOW_SDK_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => std::env::temp_dir()
            .join("keygate-langflow-sdk")
            .join("bin")
            .join("python"),
    }
}

/// Runs a client script against the app with the flow's id, endpoint
/// name and key; fails the test with the script's output when it fails.
async fn run_script(program: &Path, script: &Path, app: &TestApp, flow: &str, key: &str) {
    let output = tokio::process::Command::new(program)
        .arg(script)
        .current_dir(script.parent().unwrap())
        .env("KEYGATE_URL", &app.base)
        .env("KEYGATE_KEY", key)
        .env("KEYGATE_FLOW", flow)
        .env("KEYGATE_ENDPOINT", "chat")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        output.status
    );
    assert!(stdout.contains("\"ok\": true") || stdout.contains("\"ok\":true"));
}

/// Everything Langflow received: Langflow's key on each request, keygate's
/// key on none, Langflow's flow id in every path.
fn check_received(received: &[Received], langflow: &StandInLangflow, key: &str) -> Vec<String> {
    for got in received {
        assert_eq!(got.header("x-api-key"), Some(langflow.key.as_str()));
        assert!(
            !got.everything().contains(key),
            "keygate's key reached Langflow"
        );
        assert!(got.path.ends_with(&langflow.flow_id), "{}", got.path);
    }
    received.iter().map(|r| r.path.clone()).collect()
}

async fn javascript_client_works_unchanged(backend: Backend) {
    let modules = root().join("tests/clients/js/node_modules/@datastax/langflow-client");
    assert!(
        modules.exists(),
        "the JavaScript client is not installed: run `npm ci --prefix tests/clients/js` (.ci/run does)"
    );
    let mut langflow = StandInLangflow::start();
    let (app, _token, flow, key) = langflow_setup(backend, &langflow, &[]).await;
    let flow_id = flow["id"].as_str().unwrap();
    let script = root().join("tests/clients/js/check.mjs");
    run_script(Path::new("node"), &script, &app, flow_id, &key).await;
    let paths = check_received(&langflow.drain(), &langflow, &key);
    let upload = format!("/api/v1/files/upload/{}", langflow.flow_id);
    assert!(paths.contains(&upload), "{paths:?}");
    assert!(paths.len() >= 5, "{paths:?}");
}

async fn python_sdk_works_unchanged(backend: Backend) {
    let python = sdk_python();
    assert!(
        python.exists(),
        "Langflow's Python SDK is not installed at {}: run .ci/run, or `python3 -m venv` there and `pip install langflow-sdk==0.4.0`",
        python.display()
    );
    let mut langflow = StandInLangflow::start();
    let (app, _token, flow, key) = langflow_setup(backend, &langflow, &[]).await;
    let flow_id = flow["id"].as_str().unwrap();
    let script = root().join("tests/clients/python/check_sdk.py");
    run_script(&python, &script, &app, flow_id, &key).await;
    let paths = check_received(&langflow.drain(), &langflow, &key);
    let run = format!("/api/v1/run/{}", langflow.flow_id);
    assert_eq!(paths.iter().filter(|p| **p == run).count(), 3, "{paths:?}");
}
