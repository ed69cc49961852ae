//! `/health` (alive), `/ready` (able to do its work), `/version`, `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use tokio::process::Command;

use crate::startup::AppState;
use crate::store::JobFilter;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(crate::metrics::render))
}

/// The process is alive and answering.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn version() -> Json<Value> {
    Json(json!({ "name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION") }))
}

/// Every check named with its outcome; `503` listing the failing ones.
async fn ready(State(state): State<AppState>) -> Response {
    let config = &state.config;
    let mut checks = Map::new();
    let (terraform, ansible) = tokio::join!(
        tool_version(&config.terraform_binary, "version"),
        tool_version(&config.ansible_playbook_binary, "--version"),
    );
    checks.insert("terraform".into(), outcome(terraform));
    checks.insert("ansible_playbook".into(), outcome(ansible));
    for (name, dir) in [("data_dir", &config.data_dir), ("log_dir", &config.log_dir)] {
        let writable = tempfile::tempfile_in(dir)
            .map(|_| format!("{} is writable", dir.display()))
            .map_err(|e| format!("{} is not writable: {e}", dir.display()));
        checks.insert(name.into(), outcome(writable));
    }
    let store = state
        .runner
        .store()
        .list(&JobFilter {
            limit: 1,
            ..JobFilter::default()
        })
        .await
        .map(|_| "reachable".to_string())
        .map_err(|e| e.to_string());
    checks.insert("job_store".into(), outcome(store));
    let vault = match &config.ansible_vault_password {
        Some(_) => Ok("ANSIBLE_VAULT_PASSWORD is set".to_string()),
        None => Err("ANSIBLE_VAULT_PASSWORD is not set: /ansible/run cannot work".to_string()),
    };
    checks.insert("vault_password".into(), outcome(vault));
    let failing: Vec<&String> = checks
        .iter()
        .filter(|(_, c)| c["ok"] == false)
        .map(|(name, _)| name)
        .collect();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if failing.is_empty() { "ready" } else { "not ready" },
        "failing": failing,
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

fn outcome(result: Result<String, String>) -> Value {
    match result {
        Ok(detail) => json!({ "ok": true, "detail": detail }),
        Err(detail) => json!({ "ok": false, "detail": detail }),
    }
}

/// The first line a tool prints about its version.
async fn tool_version(binary: &std::path::Path, arg: &str) -> Result<String, String> {
    let run = Command::new(binary)
        .arg(arg)
        .env("CHECKPOINT_DISABLE", "1")
        .env_remove("ANSIBLE_VAULT_PASSWORD")
        .env_remove("API_TOKENS")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .map_err(|_| format!("{} --version took too long", binary.display()))?
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().unwrap_or_default().trim().to_string();
    if output.status.success() && !first.is_empty() {
        Ok(first)
    } else {
        Err(format!("{} {arg} failed", binary.display()))
    }
}
