//! `/jobs`: the record, numbered log and live events of every run, cancel,
//! and the approval of a plan (four eyes).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Access;
use crate::cluster::guardrails::{self, Approval, Decision};
use crate::cluster::{Actor, App};
use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody, OptionalJson};
use crate::runner::Follower;
use crate::store::{Job, JobFilter, JobId, JobKind, JobStatus, LogLine};
use crate::tokens::Scope;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(Access::Needs(Scope::Read).declare(routes!(list_jobs)))
        .routes(Access::Needs(Scope::Read).declare(routes!(get_job)))
        .routes(Access::Needs(Scope::Read).declare(routes!(get_job_log)))
        .routes(Access::Needs(Scope::Read).declare(routes!(stream_job_events)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(cancel_job)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(approve_plan)))
        .routes(Access::Needs(Scope::Apply).declare(routes!(reject_plan)))
}

/// The job a route names.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct JobIdParam {
    /// The job's id (a UUID).
    id: JobId,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this workspace's jobs.
    workspace: Option<String>,
    /// Only jobs of this kind.
    #[param(value_type = Option<JobKind>)]
    kind: Option<String>,
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<u64>,
    /// Jobs per page: 1 to 500 (smaller and larger values are clamped), default 50.
    limit: Option<usize>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Newest first, filtered, a page at a time: pass `next_cursor` back as `cursor`.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "jobs",
    summary = "List jobs, newest first",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "An unknown parameter or a bad value", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn list_jobs(
    State(state): State<App>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
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
    let mut page = state.runner.jobs(&filter).await.map_err(ApiError::store)?;
    guardrails::attach_approvals(&state, &mut page.jobs).await?;
    Ok(Json(JobList {
        jobs: page.jobs,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// The job's record.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "jobs",
    summary = "One job's record",
    params(JobIdParam),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn get_job(
    State(state): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Job>, ApiError> {
    let mut job = find(&state, &id).await?;
    guardrails::attach_approvals(&state, std::slice::from_mut(&mut job)).await?;
    Ok(Json(job))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Lines numbered above this one (default 0): pass `next_after` back to poll.
    after: Option<u64>,
    /// At most this many lines: 1 to 10000 (clamped), default 1000.
    limit: Option<usize>,
}

/// A slice of a job's numbered log.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobLog {
    pub job_id: JobId,
    pub status: JobStatus,
    pub lines: Vec<LogLine>,
    /// The last line's number (or `after` when there is none): the next `after`.
    pub next_after: u64,
}

/// Lines numbered above `after` (default 0), at most `limit` (default 1000).
#[utoipa::path(
    get,
    path = "/jobs/{id}/log",
    tag = "jobs",
    summary = "A job's numbered log lines",
    params(JobIdParam, LogQuery),
    responses(
        (status = 200, description = "The lines after `after`", body = JobLog),
        (status = 400, description = "The id is not a UUID, or a bad parameter", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn get_job_log(
    State(state): State<App>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<JobLog>, ApiError> {
    let job = find(&state, &id).await?;
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let lines = state
        .runner
        .store()
        .read_log(job.id, after, limit)
        .await
        .map_err(ApiError::store)?;
    let next = lines.last().map(|l| l.n).unwrap_or(after);
    Ok(Json(JobLog {
        job_id: job.id,
        status: job.status,
        lines,
        next_after: next,
    }))
}

/// One event of `/jobs/{id}/events`, as Server-Sent Events fields: a `line`
/// (its number as `id`, a `LogLine` as data) or the last, `end` (the `Job`).
/// Heartbeats are comments, not events.
pub struct JobEventDoc;

impl utoipa::PartialSchema for JobEventDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let event = |name: &str, data: &str, numbered: bool| {
            let mut event = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "event",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([name])),
                )
                .required("event")
                .property(
                    "data",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .content_media_type("application/json")
                        .content_schema(Some(Ref::from_schema_name(data))),
                )
                .required("data");
            if numbered {
                event = event
                    .property(
                        "id",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some("^[0-9]+$"))
                            .description(Some("The line's number")),
                    )
                    .required("id");
            }
            event
        };
        OneOfBuilder::new()
            .item(event("line", "LogLine", true))
            .item(event("end", "Job", false))
            .description(Some(
                "A `line` event per log line (replayed, then live), and a last `end` event \
                 carrying the job",
            ))
            .into()
    }
}

impl ToSchema for JobEventDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "JobEvent".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((LogLine::name().into(), LogLine::schema()));
        schemas.push((Job::name().into(), Job::schema()));
        LogLine::schemas(schemas);
        Job::schemas(schemas);
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Replay the lines numbered above this one (default 0); `Last-Event-ID` wins.
    after: Option<u64>,
}

/// Server-Sent Events: every log line as an event whose id is its number
/// (replayed from `Last-Event-ID` or `?after=`, then live), heartbeats, and a
/// last `end` event carrying the job record. Works for finished jobs too.
#[utoipa::path(
    get,
    path = "/jobs/{id}/events",
    tag = "jobs",
    summary = "Follow a job's log live (Server-Sent Events)",
    description = "Every log line as an event `line` (`id:` its number, data a `LogLine`), \
        replayed from `Last-Event-ID` (or `?after=`), then live; a comment `heartbeat` every \
        15 s; a last event `end` whose data is the `Job`. Works for finished jobs too.",
    params(
        JobIdParam,
        EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this line number"),
    ),
    responses(
        (status = 200, description = "The event stream; the schema describes each event",
            content_type = "text/event-stream", body = JobEventDoc),
        (status = 400, description = "The id is not a UUID, or a bad `after` or `Last-Event-ID`", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn stream_job_events(
    State(state): State<App>,
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
    // Events formatted ahead of the client: a few hundred bytes each, per
    // follower.
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(state, job.id, follower, tx));
    let stream = ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("heartbeat"),
    ))
}

/// Feeds one SSE client; ends when the job has ended or the client has gone.
async fn follow(state: App, id: JobId, mut follower: Follower, tx: mpsc::Sender<Event>) {
    while let Some(line) = follower.next().await {
        if tx.send(line_event(&line)).await.is_err() {
            return;
        }
    }
    if let Ok(Some(job)) = state.runner.job(id).await {
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

/// `cancel`'s answer: the signal is sent; the job ends `cancelled`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelResult {
    pub message: String,
    pub job_id: JobId,
}

/// SIGINT to the job's process group, SIGKILL after `CANCEL_GRACE_SECS`.
#[utoipa::path(
    post,
    path = "/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Cancel a running job",
    description = "SIGINT to the job's process group, SIGKILL after `CANCEL_GRACE_SECS`; the job \
        ends `cancelled`.",
    params(JobIdParam),
    responses(
        (status = 200, description = "Cancel requested", body = CancelResult),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not running", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn cancel_job(
    State(state): State<App>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CancelResult>, ApiError> {
    let job = find(&state, &id).await?;
    if job.status.is_finished() || !state.runner.cancel(job.id) {
        return Err(ApiError::Conflict(format!(
            "job {} is not running ({})",
            job.id,
            job.status.as_str()
        )));
    }
    Ok(Json(CancelResult {
        message:
            "cancel requested: SIGINT sent to the job's processes, SIGKILL after the grace period"
                .into(),
        job_id: job.id,
    }))
}

/// The body of approve and reject.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"comment": "one replica more, as asked in the ticket"}))]
pub struct DecisionRequest {
    /// Why: required to reject, at most 2000 characters.
    #[serde(default)]
    comment: Option<String>,
}

/// A plan approved or rejected.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResult {
    pub message: String,
    /// The plan's job.
    pub job_id: JobId,
    pub approval: Approval,
}

/// Approves a plan made while its workspace required approval.
#[utoipa::path(
    post,
    path = "/jobs/{id}/approve",
    tag = "jobs",
    summary = "Approve a plan (four eyes)",
    description = "The plan (a `terraform.plan` job made while its workspace required approval) \
        may then be applied, by `/terraform/apply` or `/deploy/resume`. Needs a token other than \
        the one that made the plan, and authentication on: without `API_TOKENS` every caller is \
        `anonymous` and no plan can be approved. Only the workspace's current saved plan, made \
        from the current `terraform.tfvars`, is approved.",
    params(JobIdParam),
    request_body(content = Option<DecisionRequest>, description = "An optional comment; the body may be omitted"),
    responses(
        (status = 200, description = "The plan is approved", body = DecisionResult),
        (status = 400, description = "The id is not a UUID, or a bad body (`fields`)", body = ErrorBody),
        (status = 403, description = "The token made the plan, or authentication is off (`rule`: \
            `four_eyes`); or the token's scope is below apply", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Not a plan, a plan that needs no approval or did not \
            succeed, already decided, or stale (a newer plan, or terraform.tfvars changed)", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn approve_plan(
    State(state): State<App>,
    ApiPath(id): ApiPath<String>,
    actor: Actor,
    OptionalJson(body): OptionalJson<DecisionRequest>,
) -> Result<Json<DecisionResult>, ApiError> {
    decide(&state, &id, Decision::Approve, body, &actor).await
}

/// Rejects a plan made while its workspace required approval: it is
/// discarded.
#[utoipa::path(
    post,
    path = "/jobs/{id}/reject",
    tag = "jobs",
    summary = "Reject a plan (four eyes)",
    description = "The plan is discarded: apply answers that there is no saved plan. A comment \
        saying why is required. Needs a token other than the one that made the plan, and \
        authentication on.",
    params(JobIdParam),
    request_body(content = DecisionRequest, description = "Why the plan is rejected"),
    responses(
        (status = 200, description = "The plan is rejected and discarded", body = DecisionResult),
        (status = 400, description = "The id is not a UUID, or no `comment` (`fields`)", body = ErrorBody),
        (status = 403, description = "The token made the plan, or authentication is off (`rule`: \
            `four_eyes`); or the token's scope is below apply", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Not a plan, a plan that needs no approval or did not \
            succeed, already decided, or stale (a newer plan, or terraform.tfvars changed)", body = ErrorBody),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
async fn reject_plan(
    State(state): State<App>,
    ApiPath(id): ApiPath<String>,
    actor: Actor,
    OptionalJson(body): OptionalJson<DecisionRequest>,
) -> Result<Json<DecisionResult>, ApiError> {
    decide(&state, &id, Decision::Reject, body, &actor).await
}

async fn decide(
    state: &App,
    id: &str,
    decision: Decision,
    body: DecisionRequest,
    actor: &Actor,
) -> Result<Json<DecisionResult>, ApiError> {
    let id = parse_id(id)?;
    let approval = guardrails::decide(state, id, decision, body.comment, actor).await?;
    let verb = match decision {
        Decision::Approve => "approved: it may be applied",
        Decision::Reject => "rejected: it is discarded",
    };
    Ok(Json(DecisionResult {
        message: format!("plan job {id} {verb}"),
        job_id: id,
        approval,
    }))
}

fn parse_id(id: &str) -> Result<JobId, ApiError> {
    JobId::parse(id).ok_or_else(|| ApiError::field("id", "is not a job id (a UUID)"))
}

async fn find(state: &App, id: &str) -> Result<Job, ApiError> {
    let parsed = parse_id(id)?;
    state
        .runner
        .job(parsed)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}
