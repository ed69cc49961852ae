//! The API's OpenAPI 3.1 document, generated from the code.
//!
//! `routes::api()` builds the router and the document from the same list of
//! routes: each handler's `#[utoipa::path]` gives its path, method, body and
//! answers, and the types it reads and answers with give the schemas.
//! [`finish`] then adds what follows from the code around the handlers: the
//! `name` parameter of the run routes nested under `/workspaces/{name}`, each
//! route's declared scope (security, 401, 403), and the
//! answers of the layers every route passes through (413, 415, and 400 for a
//! `Host` outside `ALLOWED_HOSTS`).

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};
use utoipa::{IntoParams, OpenApi as _, PartialSchema, ToResponse, ToSchema};

use crate::auth::{Access, operations};
use crate::error::ErrorBody;
use crate::store::{Job, JobId, JobKind, JobStatus, LogLine, Stream};
use crate::tokens::Scope;

/// The name of the bearer-token security scheme.
pub const BEARER: &str = "bearer";

/// The prefix under which `routes::api()` nests the run routes.
pub const WORKSPACE_PREFIX: &str = "/workspaces/{name}";

/// What the document says before the routes are added.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "pgcluster-api",
        description = "Builds a replicated PostgreSQL cluster (one primary, N streaming replicas \
            behind a bastion) by driving terraform and ansible-playbook. Every run is a job owned \
            by the server: `\"async\": true` (or `Prefer: respond-async`) answers `202` at once, \
            `/jobs/{id}/events` follows it live.\n\n\
            Authentication: `Authorization: Bearer <token>` once `API_TOKENS` holds a token. Each \
            token has one scope, and each scope includes the ones before it: `read` < `plan` < \
            `apply` < `admin`. Every route says the scope it needs.\n\n\
            The original routes act on the workspace `default`; every run route also works on a \
            named workspace under `/workspaces/{name}/...`.",
        license(name = "Proprietary"),
    ),
    tags(
        (name = "terraform", description = "terraform.tfvars and the terraform commands"),
        (name = "ansible", description = "The inventory, the vault and the playbook"),
        (name = "deploy", description = "The whole flow as one job with named steps, and its resume"),
        (name = "cluster", description = "Replication state and lag, read from the cluster itself"),
        (name = "backups", description = "pgBackRest backups, the recovery window, point-in-time restore and backup schedules"),
        (name = "jobs", description = "Every run's record, numbered log, live events, cancel"),
        (name = "workspaces", description = "Named environments, each with its own stack copy, state and lock; their owners, approvals and expiry"),
        (name = "quotas", description = "How many workspaces and database hosts each token may hold"),
        (name = "webhooks", description = "Signed POSTs to URLs of yours when jobs end, approvals are asked or given, workspaces expire, the leader changes"),
        (name = "health", description = "Liveness, readiness, version, metrics"),
        (name = "docs", description = "This document, and Swagger UI showing it"),
    ),
    components(
        schemas(ErrorBody, AcceptedJob, Job, JobId, JobKind, JobStatus, LogLine, Stream, Scope),
        responses(
            Accepted,
            Busy,
            InternalError,
            Unauthorized,
            Forbidden,
            PayloadTooLarge,
            UnsupportedMediaType,
            BadHost,
            NoSuchWorkspace,
            InsufficientStorage,
            StorageUnavailable,
            ClusterUnavailable,
        ),
    ),
)]
struct ApiDoc;

/// The document before the routes are added: `routes::api()` starts from it.
pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// Adds to the routes' operations what the code around the handlers decides.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token made with `pgcluster-api token create --name NAME --scope \
                     read|plan|apply|admin`; its SHA-256 is configured in `API_TOKENS`. Not \
                     checked while `API_TOKENS` is empty (every caller is then an anonymous \
                     admin).",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in operations(item) {
            optional_body_is_not_null(operation);
            // Work that records a job or a schedule, or writes files, is
            // refused on a disk that cannot take it.
            if method == axum::http::Method::POST || method == axum::http::Method::PUT {
                add_response::<InsufficientStorage>(operation, "507");
                add_response::<StorageUnavailable>(operation, "503");
            }
            if path.starts_with(&format!("{WORKSPACE_PREFIX}/")) {
                in_workspace(operation);
            }
            let access = Access::of(operation).unwrap_or(Access::Needs(Scope::Admin));
            secure(operation, access);
            if operation.request_body.is_some() {
                add_response::<PayloadTooLarge>(operation, "413");
                add_response::<UnsupportedMediaType>(operation, "415");
            }
            // Every route: `ALLOWED_HOSTS` is checked before any handler.
            add_response::<BadHost>(operation, "400");
        }
    }
    add_links(&mut doc);
    doc
}

/// Links (for readers and for tools that follow them): from the accepted job
/// to every `/jobs/{id}` route, and from a created workspace to every route
/// under `/workspaces/{name}`.
fn add_links(doc: &mut OpenApi) {
    let mut targets = |prefix: &str, param: &str, from: &str| {
        let mut links = Vec::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            if !(path == prefix || path.starts_with(&format!("{prefix}/"))) {
                continue;
            }
            for (_, operation) in operations(item) {
                if let Some(id) = &operation.operation_id {
                    let link = LinkBuilder::new()
                        .operation_id(id)
                        .parameter(param, from)
                        .build();
                    links.push((id.clone(), RefOr::T(link)));
                }
            }
        }
        links
    };
    let job_links = targets("/jobs/{id}", "id", "$response.body#/job_id");
    let workspace_links = targets(WORKSPACE_PREFIX, "name", "$response.body#/name");
    let components = doc.components.get_or_insert_with(Default::default);
    if let Some(RefOr::T(accepted)) = components.responses.get_mut("Accepted") {
        accepted.links.extend(job_links);
    }
    let created = doc
        .paths
        .paths
        .get_mut("/workspaces")
        .and_then(|item| item.post.as_mut())
        .and_then(|operation| operation.responses.responses.get_mut("201"));
    if let Some(RefOr::T(created)) = created {
        created.links.extend(workspace_links);
    }
}

/// A body that may be omitted is declared `Option<T>`, for which utoipa
/// allows `null` too; but a body sent is a JSON object (`null` is refused).
fn optional_body_is_not_null(operation: &mut Operation) {
    let Some(RefOr::T(body)) = &mut operation.request_body else {
        return;
    };
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else {
            continue;
        };
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let is_null = |s: &RefOr<Schema>| {
            matches!(s, RefOr::T(Schema::Object(o))
                if o.schema_type == SchemaType::Type(Type::Null))
        };
        if let [item, null] = &one_of.items[..]
            && is_null(null)
            && !is_null(item)
        {
            content.schema = Some(item.clone());
        }
    }
}

/// A run route nested under `/workspaces/{name}`: the same operation, on the
/// named workspace.
fn in_workspace(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    let declared = parameters
        .iter()
        .any(|p| matches!(p, RefOr::T(p) if p.name == "name"));
    if !declared {
        let name = WorkspaceNameParam::into_params(|| None);
        for (i, parameter) in name.into_iter().enumerate() {
            parameters.insert(i, RefOr::T(parameter));
        }
    }
    if let Some(id) = &mut operation.operation_id {
        *id = format!("workspace_{id}");
    }
    add_response::<NoSuchWorkspace>(operation, "404");
}

/// Security, 401 and 403 from the route's entry in `auth`'s table.
fn secure(operation: &mut Operation, access: Access) {
    let (requirements, note) = match access {
        Access::Open => return,
        Access::Metrics => (
            vec![
                SecurityRequirement::default(),
                SecurityRequirement::new(BEARER, [Scope::Read.as_str()]),
            ],
            "Open, unless `METRICS_REQUIRE_TOKEN=true`: then it needs a token with the `read` \
             scope (or a higher one)."
                .to_string(),
        ),
        Access::Needs(scope) => (
            vec![SecurityRequirement::new(BEARER, [scope.as_str()])],
            if scope == Scope::Admin {
                "Needs a token with the `admin` scope.".to_string()
            } else {
                format!("Needs a token with the `{scope}` scope (or a higher one).")
            },
        ),
    };
    operation.security = Some(requirements);
    let description = operation.description.get_or_insert_with(String::new);
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str(&note);
    add_response::<Unauthorized>(operation, "401");
    add_response::<Forbidden>(operation, "403");
}

/// Adds a shared response unless the operation documents that status itself.
fn add_response<R: for<'r> ToResponse<'r>>(operation: &mut Operation, status: &str) {
    let (name, _) = R::response();
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
}

/// A response with the error body and a description.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(ErrorBody::schema_ref())),
    )
}

/// `ErrorBody` by reference.
trait SchemaRef {
    fn schema_ref() -> RefOr<Schema>;
}

impl<T: ToSchema> SchemaRef for T {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(Ref::from_schema_name(T::name()))
    }
}

macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => $description:literal;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::T(error_response($description).build()))
            }
        }
    )*};
}

error_responses! {
    /// 409 of the run routes.
    Busy => "The workspace is busy: `job_id` is the job holding it (then `Retry-After` says \
        when to try again), or a file update is under way";
    /// 500.
    InternalError => "A fault of the server: the cause is logged, never sent";
    /// 403 of the routes that need a scope.
    Forbidden => "The token is valid but its scope is below the route's (`required_scope`)";
    /// 413 of the routes that take a body.
    PayloadTooLarge => "The body is larger than `MAX_BODY_BYTES`";
    /// 415 of the routes that take a body.
    UnsupportedMediaType => "The body is not JSON (`Content-Type: application/json`)";
    /// 400 of every route.
    BadHost => "The `Host` header is not in `ALLOWED_HOSTS`";
    /// 507 of the routes that start work or write files.
    InsufficientStorage => "No space left under `DATA_DIR` (or below `MIN_FREE_BYTES`): nothing \
        was started or written; `Retry-After` says when to try again";
    /// 503 of the routes that start work or write files.
    StorageUnavailable => "The disk under `DATA_DIR` is read-only or failing: nothing was \
        started or written; `Retry-After` says when to try again";
    /// 503 of the routes that ask the cluster's Patroni.
    ClusterUnavailable => "The cluster could not be probed through the bastion, or it has no \
        leader now (`error` says which); for an operation, also a disk under `DATA_DIR` that is \
        read-only or failing. `Retry-After` says when to try again";
    /// 404 of the routes under `/workspaces/{name}`.
    NoSuchWorkspace => "No such workspace: create it with `POST /workspaces`";
}

/// 401: with `WWW-Authenticate: Bearer`.
pub struct Unauthorized;

impl<'r> ToResponse<'r> for Unauthorized {
    fn response() -> (&'r str, RefOr<Response>) {
        let header = utoipa::openapi::HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .examples(["Bearer"]),
            ))
            .description(Some("`Bearer`"))
            .build();
        let response = error_response("No bearer token, or one that is not configured")
            .header("WWW-Authenticate", header)
            .build();
        ("Unauthorized", RefOr::T(response))
    }
}

/// The answer of a run route started with `"async": true` (or
/// `Prefer: respond-async`): `202` with `Location: /jobs/{id}` at once.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct AcceptedJob {
    pub job_id: JobId,
    /// The job as recorded when it was accepted (queued or running).
    pub job: Job,
}

/// The workspace a route names: `/workspaces/{name}`, added to every run
/// route nested under it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkspaceNameParam {
    /// 1-32 lowercase letters, digits or `-`, starting with a letter
    /// (`default` is the workspace of the original routes).
    #[param(pattern = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", example = "default")]
    pub name: String,
}

/// 202 of the run routes: the job, and where to follow it.
pub struct Accepted;

impl<'r> ToResponse<'r> for Accepted {
    fn response() -> (&'r str, RefOr<Response>) {
        let header = utoipa::openapi::HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(
                "The job: `/jobs/{id}` (follow it live at `/jobs/{id}/events`)",
            ))
            .build();
        let response = ResponseBuilder::new()
            .description("The job is accepted and runs on; the answer does not wait for it")
            .content(
                "application/json",
                Content::new(Some(AcceptedJob::schema_ref())),
            )
            .header("Location", header)
            .build();
        ("Accepted", RefOr::T(response))
    }
}

// The job store's types, described here so the store stays free of the HTTP
// layer; the unit tests below hold them to what serde writes.

impl PartialSchema for JobId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".into())))
            .description(Some("A job's id (a UUID)"))
            .into()
    }
}

impl ToSchema for JobId {}

impl PartialSchema for JobKind {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(JobKind::ALL.iter().map(|k| k.as_str())))
            .description(Some("What a job runs"))
            .into()
    }
}

impl ToSchema for JobKind {}

impl PartialSchema for JobStatus {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(JobStatus::ALL.iter().map(|s| s.as_str())))
            .description(Some(
                "Where a job is in its life: `interrupted` when the server stopped while it ran",
            ))
            .into()
    }
}

impl ToSchema for JobStatus {}

/// Every stream, in the order of the enum.
fn streams() -> [Stream; 3] {
    // A new variant breaks this match, and so gets added to the list.
    let _every_variant = |s: Stream| match s {
        Stream::Stdout | Stream::Stderr | Stream::System => (),
    };
    [Stream::Stdout, Stream::Stderr, Stream::System]
}

impl PartialSchema for Stream {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(streams().map(Stream::as_str)))
            .description(Some(
                "Where a line came from: the tool's stdout or stderr, or the server (`system`: \
                 truncation markers, timeouts)",
            ))
            .into()
    }
}

impl ToSchema for Stream {}

/// The record of one run of a tool.
#[derive(ToSchema)]
#[allow(dead_code)]
struct JobRecord {
    id: JobId,
    kind: JobKind,
    workspace: String,
    /// The request that started it, without secrets.
    #[schema(value_type = Object)]
    request: serde_json::Value,
    /// Who started it (the token's name; `anonymous` without authentication).
    started_by: Option<String>,
    /// The `x-request-id` of the request that started it.
    request_id: Option<String>,
    status: JobStatus,
    exit_code: Option<i32>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    started_at: Option<String>,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
    duration_ms: Option<u64>,
    /// Kind-specific result (e.g. `changes` of a plan, the outputs of `terraform output`).
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    /// Why the job did not succeed, in one line.
    error: Option<String>,
    /// Process (and process group) id of the tool while it runs.
    pid: Option<u32>,
    /// A plan's approval, when its workspace required one (`terraform.plan` only).
    #[schema(nullable = false)]
    approval: Option<crate::cluster::guardrails::Approval>,
}

impl PartialSchema for Job {
    fn schema() -> RefOr<Schema> {
        JobRecord::schema()
    }
}

impl ToSchema for Job {
    fn name() -> std::borrow::Cow<'static, str> {
        "Job".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        JobRecord::schemas(schemas)
    }
}

/// One numbered line of a job's log.
#[derive(ToSchema)]
#[allow(dead_code)]
struct NumberedLine {
    /// 1-based and in order, per job; a gap only where lines could not be
    /// stored, after a `system` line that says so.
    n: u64,
    stream: Stream,
    text: String,
}

impl PartialSchema for LogLine {
    fn schema() -> RefOr<Schema> {
        NumberedLine::schema()
    }
}

impl ToSchema for LogLine {
    fn name() -> std::borrow::Cow<'static, str> {
        "LogLine".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        NumberedLine::schemas(schemas)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};

    use super::*;

    /// The property names of an object schema.
    fn properties<T: PartialSchema>() -> BTreeSet<String> {
        let value = serde_json::to_value(T::schema()).unwrap();
        value["properties"]
            .as_object()
            .expect("an object schema")
            .keys()
            .cloned()
            .collect()
    }

    fn enum_values<T: PartialSchema>() -> Vec<Value> {
        let value = serde_json::to_value(T::schema()).unwrap();
        value["enum"].as_array().expect("an enum schema").clone()
    }

    #[test]
    fn the_job_schema_has_every_key_a_job_is_written_with() {
        let mut job = Job::queued(JobId::new(), JobKind::TerraformPlan, "default", json!({}));
        let now = time::OffsetDateTime::now_utc();
        job.started_by = Some("ci".into());
        job.request_id = Some("r".into());
        job.exit_code = Some(0);
        job.started_at = Some(now);
        job.finished_at = Some(now);
        job.duration_ms = Some(1);
        job.result = Some(json!({"changes": true}));
        job.error = Some("e".into());
        job.pid = Some(1);
        job.pid_start = Some(1);
        job.approval = Some(json!({"state": "pending"}));
        let written = serde_json::to_value(&job).unwrap();
        let keys: BTreeSet<String> = written.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, properties::<Job>());
    }

    #[test]
    fn the_log_line_schema_has_every_key_a_line_is_written_with() {
        let line = LogLine {
            n: 1,
            stream: Stream::Stderr,
            text: "x".into(),
        };
        let written = serde_json::to_value(&line).unwrap();
        let keys: BTreeSet<String> = written.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, properties::<LogLine>());
    }

    #[test]
    fn the_enums_list_what_serde_writes() {
        let kinds: Vec<Value> = JobKind::ALL
            .iter()
            .map(|k| serde_json::to_value(k).unwrap())
            .collect();
        assert_eq!(kinds, enum_values::<JobKind>());
        let statuses: Vec<Value> = JobStatus::ALL
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        assert_eq!(statuses, enum_values::<JobStatus>());
        let streams: Vec<Value> = streams()
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        assert_eq!(streams, enum_values::<Stream>());
        let scopes: Vec<Value> = Scope::ALL
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        assert_eq!(scopes, enum_values::<Scope>());
    }
}
