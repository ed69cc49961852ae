//! `/jobs`: the record and numbered log of every run, and cancel.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::startup::AppState;
use crate::store::{Job, JobId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/log", get(get_job_log))
        .route("/jobs/{id}/cancel", post(cancel_job))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

/// Newest first.
async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let jobs = state
        .runner
        .store()
        .list(limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "jobs": jobs })))
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(find(&state, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Lines numbered above `after` (default 0), at most `limit` (default 1000).
async fn get_job_log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    let job = find(&state, &id).await?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let lines = state
        .runner
        .store()
        .read_log(job.id, after, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = lines.last().map(|l| l.n).unwrap_or(after);
    Ok(Json(json!({
        "job_id": job.id,
        "status": job.status,
        "lines": lines,
        "next_after": next,
    })))
}

async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = find(&state, &id).await?;
    if job.status.is_finished() {
        return Err(ApiError::Conflict(format!(
            "job {} has already ended ({})",
            job.id,
            job.status.as_str()
        )));
    }
    state.runner.cancel(job.id);
    Ok(Json(json!({
        "message": "cancel requested: SIGINT sent to the job's processes, SIGKILL after the grace period",
        "job_id": job.id,
    })))
}

async fn find(state: &AppState, id: &str) -> Result<Job, ApiError> {
    let parsed =
        JobId::parse(id).ok_or_else(|| ApiError::field("id", "is not a job id (a UUID)"))?;
    state
        .runner
        .store()
        .get(parsed)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}
