//! Prometheus metrics: the process-wide recorder, what is measured, and the
//! text served at `/metrics`.
//!
//! - `http_requests_total{route,method,status}`, `http_request_duration_seconds{route}`
//! - `jobs_total{kind,status}`, `job_duration_seconds{kind}`, `jobs_running`
//! - `job_log_bytes_total`, `job_cancellations_total`, `job_timeouts_total`
//! - `pgcluster_disk_free_bytes{dir}`: free space under `DATA_DIR` and `LOG_DIR`
//! - `pgcluster_leader_changes_total{workspace,cause}`: leader changes the
//!   cluster monitor saw (`switchover`, `failover`, `restore`, `automatic`)
//! - `pgcluster_backup_last_success_timestamp_seconds{workspace,type}`: the
//!   stop time of the newest backup of each type (from a backup job or a
//!   read of the repository); `pgcluster_backup_duration_seconds{workspace,type}`:
//!   how long each backup job took
//! - `pgcluster_wal_archive_failed_total{workspace}`: PostgreSQL's count of
//!   failed WAL archive attempts on the leader, as of the last status read
//! - `pgcluster_webhook_deliveries_total{outcome}`: webhook deliveries that
//!   ended `delivered` or `failed` (after their retries)

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::{JobKind, JobStatus};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const HTTP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0, 60.0,
];
const JOB_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The recorder, installed on first use; every app of the process shares it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    &HTTP_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("job_duration_seconds".into()),
                        &JOB_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("pgcluster_backup_duration_seconds".into()),
                        &JOB_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder)
                .expect("the metrics recorder is installed once, first")
        })
        .clone()
}

/// `GET /metrics`: Prometheus text format.
pub async fn render() -> Response {
    let handle = handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// Middleware counting requests and their latency by matched route.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    ::metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    ::metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

pub fn job_started() {
    ::metrics::gauge!("jobs_running").increment(1.0);
}

pub fn job_finished(kind: JobKind, status: JobStatus, seconds: f64) {
    ::metrics::gauge!("jobs_running").decrement(1.0);
    ::metrics::counter!("jobs_total", "kind" => kind.as_str(), "status" => status.as_str())
        .increment(1);
    ::metrics::histogram!("job_duration_seconds", "kind" => kind.as_str()).record(seconds);
    match status {
        JobStatus::Cancelled => ::metrics::counter!("job_cancellations_total").increment(1),
        JobStatus::TimedOut => ::metrics::counter!("job_timeouts_total").increment(1),
        _ => {}
    }
}

pub fn log_bytes(bytes: u64) {
    ::metrics::counter!("job_log_bytes_total").increment(bytes);
}

/// Free bytes under a directory, read when `/metrics` is served.
pub fn disk_free(dir: &'static str, bytes: u64) {
    ::metrics::gauge!("pgcluster_disk_free_bytes", "dir" => dir).set(bytes as f64);
}

/// A leader change the cluster monitor recorded.
pub fn leader_changed(workspace: &str, cause: &'static str) {
    ::metrics::counter!("pgcluster_leader_changes_total", "workspace" => workspace.to_string(), "cause" => cause)
        .increment(1);
}

/// A backup of `kind` finished at `stopped_at` (Unix seconds).
pub fn backup_succeeded(workspace: &str, kind: &str, stopped_at: f64) {
    ::metrics::gauge!("pgcluster_backup_last_success_timestamp_seconds", "workspace" => workspace.to_string(), "type" => kind.to_string())
        .set(stopped_at);
}

/// How long a backup job took.
pub fn backup_duration(workspace: &str, kind: &str, seconds: f64) {
    ::metrics::histogram!("pgcluster_backup_duration_seconds", "workspace" => workspace.to_string(), "type" => kind.to_string())
        .record(seconds);
}

/// `pg_stat_archiver.failed_count` on the leader, as last read: a gauge,
/// since PostgreSQL's count starts again on a new leader or a restart.
pub fn wal_archive_failed(workspace: &str, failed: u64) {
    ::metrics::gauge!("pgcluster_wal_archive_failed_total", "workspace" => workspace.to_string())
        .set(failed as f64);
}

/// A webhook delivery that ended: `delivered` or `failed`.
pub fn webhook_delivery(outcome: &'static str) {
    ::metrics::counter!("pgcluster_webhook_deliveries_total", "outcome" => outcome).increment(1);
}
