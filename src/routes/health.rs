//! `/health` (alive), `/ready` (able to do its work), `/version`, `/metrics`.

use std::time::Duration;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::process::Command;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Access;
use crate::cluster::App;
use crate::disk;
use crate::store::JobFilter;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Open.declare(routes!(health)))
        .routes(Access::Open.declare(routes!(ready)))
        .routes(Access::Open.declare(routes!(version)))
        .routes(Access::Metrics.declare(routes!(metrics)))
}

/// `/health`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is alive and answering.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process is alive", body = Health))
)]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `/version`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    #[schema(example = "pgcluster-api")]
    pub name: &'static str,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
}

#[utoipa::path(
    get,
    path = "/version",
    tag = "health",
    summary = "The server's name and version",
    responses((status = 200, description = "Name and version", body = Version))
)]
async fn version() -> Json<Version> {
    Json(Version {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    description = "`http_requests_total{route,method,status}`, `http_request_duration_seconds`, \
        `jobs_total{kind,status}`, `job_duration_seconds`, `jobs_running`, \
        `job_log_bytes_total`, `job_cancellations_total`, `job_timeouts_total`, \
        `pgcluster_disk_free_bytes{dir}` (`data_dir`, `log_dir`). Open unless \
        `METRICS_REQUIRE_TOKEN=true`, then it needs a `read` token.",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<App>) -> Response {
    for (dir, path) in [
        ("data_dir", &state.config.data_dir),
        ("log_dir", &state.config.log_dir),
    ] {
        if let Ok(space) = disk::Space::of(path) {
            crate::metrics::disk_free(dir, space.free);
        }
    }
    crate::metrics::render().await
}

/// `/ready`'s answer: every check with its outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadyStatus,
    /// The names of the failing checks.
    pub failing: Vec<String>,
    /// `terraform`, `ansible_playbook`, `data_dir`, `log_dir`, `job_store`,
    /// `vault_password`.
    pub checks: BTreeMap<String, Check>,
}

/// Whether every check passed.
#[derive(Debug, Serialize, ToSchema)]
pub enum ReadyStatus {
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "not ready")]
    NotReady,
}

/// One readiness check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    /// The tool's version, or what is wrong.
    pub detail: String,
}

/// Every check named with its outcome; `503` listing the failing ones.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    summary = "Readiness: the tools, directories, job store and vault password",
    description = "`200` when terraform and ansible-playbook answer, a small file written and \
        synced in `DATA_DIR` and in `LOG_DIR` lands and each keeps `MIN_FREE_BYTES` free, the job \
        store answers and the vault password is set.",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: `failing` names the broken checks", body = Readiness),
    )
)]
async fn ready(State(state): State<App>) -> Response {
    let config = &state.config;
    let mut checks: BTreeMap<String, Check> = BTreeMap::new();
    let (terraform, ansible) = tokio::join!(
        tool_version(&config.terraform_binary, "version"),
        tool_version(&config.ansible_playbook_binary, "--version"),
    );
    checks.insert("terraform".into(), outcome(terraform));
    checks.insert("ansible_playbook".into(), outcome(ansible));
    for (name, key, dir) in [
        ("data_dir", "DATA_DIR", config.data_dir.clone()),
        ("log_dir", "LOG_DIR", config.log_dir.clone()),
    ] {
        let min_free = config.min_free_bytes;
        let writable = tokio::task::spawn_blocking(move || {
            disk::check_writable(key, &dir, min_free).map(|space| {
                format!(
                    "{} is writable, {} free",
                    dir.display(),
                    disk::human(space.free)
                )
            })
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
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
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, c)| !c.ok)
        .map(|(name, _)| name.clone())
        .collect();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if failing.is_empty() {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        },
        failing,
        checks,
    };
    (status, Json(body)).into_response()
}

fn outcome(result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check { ok: true, detail },
        Err(detail) => Check { ok: false, detail },
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
