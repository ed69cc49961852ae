//! `/jobs`: the record, numbered log and live events of every run, and cancel.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiPath, ApiQuery};
use crate::runner::Follower;
use crate::startup::AppState;
use crate::store::{Job, JobFilter, JobId, JobKind, JobStatus, LogLine};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/log", get(get_job_log))
        .route("/jobs/{id}/events", get(stream_job_events))
        .route("/jobs/{id}/cancel", post(cancel_job))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workspace: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    cursor: Option<u64>,
    limit: Option<usize>,
}

/// Newest first, filtered, a page at a time: pass `next_cursor` back as `cursor`.
async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let kind = match &query.kind {
        None => None,
        Some(k) => Some(JobKind::parse(k).ok_or_else(|| {
            let known: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::field("kind", format!("must be one of {}", known.join(", ")))
        })?),
    };
    let status = match &query.status {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::field("status", format!("must be one of {}", known.join(", ")))
        })?),
    };
    let filter = JobFilter {
        workspace: query.workspace,
        kind,
        status,
        before: query.cursor,
        limit: query.limit.unwrap_or(50).clamp(1, 500),
    };
    let page = state
        .runner
        .store()
        .list(&filter)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "jobs": page.jobs,
        "next_cursor": page.next_cursor.map(|c| c.to_string()),
    })))
}

async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
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
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
}

/// Server-Sent Events: every log line as an event whose id is its number
/// (replayed from `Last-Event-ID` or `?after=`, then live), heartbeats, and a
/// last `end` event carrying the job record. Works for finished jobs too.
async fn stream_job_events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = find(&state, &id).await?;
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::field("Last-Event-ID", "must be a line number"))?,
        None => query.after.unwrap_or(0),
    };
    // Subscribes now, before the store is read: no gap, no repeat.
    let follower = state.runner.follow(job.id, after);
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(follow(state, job.id, follower, tx));
    let stream = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("heartbeat"),
    ))
}

/// Feeds one SSE client; ends when the job has ended or the client has gone.
async fn follow(state: AppState, id: JobId, mut follower: Follower, tx: mpsc::Sender<Event>) {
    while let Some(line) = follower.next().await {
        if tx.send(line_event(&line)).await.is_err() {
            return;
        }
    }
    if let Ok(Some(job)) = state.runner.store().get(id).await {
        let data = serde_json::to_string(&job).unwrap_or_default();
        let _ = tx.send(Event::default().event("end").data(data)).await;
    }
}

fn line_event(line: &LogLine) -> Event {
    Event::default()
        .id(line.n.to_string())
        .event("line")
        .data(serde_json::to_string(line).unwrap_or_default())
}

async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let job = find(&state, &id).await?;
    if job.status.is_finished() || !state.runner.cancel(job.id) {
        return Err(ApiError::Conflict(format!(
            "job {} is not running ({})",
            job.id,
            job.status.as_str()
        )));
    }
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
