//! HTTP routes: each module exports its `router()`, declares each route's
//! scope where it routes it, and keeps its handlers thin (extract, call the
//! application layer in `cluster`, answer). No route module imports another.

mod ansible;
mod backups;
mod cluster;
mod deploy;
mod docs;
mod ha;
mod health;
mod jobs;
mod quotas;
mod terraform;
mod webhooks;
mod workspaces;

use std::sync::OnceLock;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::cluster::{Actor, App};
use crate::error::ApiError;
use crate::openapi::{AcceptedJob, WORKSPACE_PREFIX};
use crate::runner::{JobHandle, RunOutput};
use crate::store::{JobId, JobStatus};
use crate::tokens::Principal;
use crate::workspace::Workspace;

/// Every route with its OpenAPI operation: the router and the document at
/// `/openapi.json` are both built from this list.
pub fn api() -> OpenApiRouter<App> {
    // The run routes act on `default`, and on a named workspace under
    // `/workspaces/{name}`.
    let run_routes = || {
        terraform::router()
            .merge(ansible::router())
            .merge(deploy::router())
            .merge(cluster::router())
            .merge(ha::router())
            .merge(backups::router())
    };
    OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(run_routes())
        .nest(WORKSPACE_PREFIX, run_routes())
        .merge(ansible::vault_router())
        .merge(jobs::router())
        .merge(health::router())
        .merge(workspaces::router())
        .merge(quotas::router())
        .merge(webhooks::router())
        .merge(docs::router())
}

/// The document served at `/openapi.json`, built once.
pub fn openapi_document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| crate::openapi::finish(api().to_openapi()))
}

/// [`openapi_document`] as JSON.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        openapi_document()
            .to_pretty_json()
            .expect("the document serializes")
    })
}

/// `Prefer: respond-async` (RFC 7240) asks for the asynchronous answer, like
/// `"async": true` in the body.
pub struct PreferAsync(pub bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PreferAsync {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let prefers = parts
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("respond-async"));
        Ok(PreferAsync(prefers))
    }
}

/// The header, documented on every run route.
impl utoipa::IntoParams for PreferAsync {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Required, Type};
        vec![
            ParameterBuilder::new()
                .name("Prefer")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "`respond-async` asks for the `202` answer, like `\"async\": true` in the body",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .examples(["respond-async"]),
                ))
                .build(),
        ]
    }
}

/// Who made the request (the token's name) and its `x-request-id`, recorded
/// on the jobs it starts.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let principal = parts.extensions.get::<Principal>();
        Ok(Actor {
            name: principal.map(|p| p.name.clone()),
            admin: principal.is_some_and(|p| p.scope == crate::tokens::Scope::Admin),
            request_id: parts
                .extensions
                .get::<crate::request_id::RequestId>()
                .map(|r| r.0.clone()),
        })
    }
}

/// Whether the caller may see sensitive values (an authenticated admin).
pub struct SeesSecrets(pub bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SeesSecrets {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(SeesSecrets(
            parts
                .extensions
                .get::<Principal>()
                .is_some_and(Principal::may_see_secrets),
        ))
    }
}

/// The workspace a route acts on: `/workspaces/{name}/...`, or `default` for
/// the original routes. An unknown or malformed name is refused.
pub struct WorkspaceParam(pub Workspace);

impl axum::extract::FromRequestParts<App> for WorkspaceParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &App,
    ) -> Result<Self, Self::Rejection> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))?;
        let name = params
            .iter()
            .find(|(key, _)| *key == "name")
            .map(|(_, value)| value.to_string());
        let Some(name) = name else {
            return Ok(WorkspaceParam(app.workspace(crate::workspace::DEFAULT)));
        };
        let name =
            crate::domain::WorkspaceName::parse(&name).map_err(|e| ApiError::field("name", e))?;
        let workspace = app.workspace(name.as_str());
        if !workspace.exists() {
            return Err(ApiError::NotFound(format!(
                "no workspace '{}': create it with POST /workspaces",
                name.as_str()
            )));
        }
        Ok(WorkspaceParam(workspace))
    }
}

/// A run route's success: a message, the job, and the tool's standard output
/// when `"output": true` was asked.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"message": "Terraform command 'init' executed successfully",
    "job_id": "3b0c5b4e-8f5d-4c1b-9e0a-2f6d7c8b9a10"}))]
pub struct RunResult {
    pub message: String,
    pub job_id: JobId,
    /// The tool's standard output, with `"output": true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub output: Option<String>,
}

/// What a run route answers: the job at once (`202`), or the route's success
/// body once the job has succeeded (`200`).
pub enum RunReply<T> {
    Accepted(Box<AcceptedJob>),
    Finished(T),
}

impl<T: Serialize> IntoResponse for RunReply<T> {
    fn into_response(self) -> Response {
        match self {
            RunReply::Finished(body) => Json(body).into_response(),
            RunReply::Accepted(accepted) => {
                let location = format!("/jobs/{}", accepted.job_id);
                let mut response = (StatusCode::ACCEPTED, Json(*accepted)).into_response();
                response.headers_mut().insert(
                    header::LOCATION,
                    location.parse().expect("a job path is a valid header"),
                );
                response
            }
        }
    }
}

/// Answers at once with the job (async), or waits for its end: a job that
/// did not succeed answers `failure` with its details (the original tool's
/// shape), a successful one what `done` makes of its output.
pub async fn reply<T>(
    app: &App,
    handle: JobHandle,
    run_async: bool,
    failure: impl Into<String>,
    done: impl FnOnce(&RunOutput) -> T,
) -> Result<RunReply<T>, ApiError> {
    if run_async {
        let id = handle.id;
        let job = app
            .runner
            .job(id)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::internal(format!("job {id} vanished")))?;
        return Ok(RunReply::Accepted(Box::new(AcceptedJob {
            job_id: id,
            job,
        })));
    }
    let output = handle.wait().await;
    if output.status != JobStatus::Succeeded {
        return Err(crate::cluster::Error::tool_failed(failure, &output).into());
    }
    Ok(RunReply::Finished(done(&output)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Access, AccessTable};
    use crate::tokens::Scope;
    use axum::http::Method;
    use serde_json::{Value, json};

    fn table() -> AccessTable {
        AccessTable::of_document(&api().to_openapi())
    }

    #[test]
    fn each_route_needs_its_scope() {
        let table = table();
        let needs = |method: Method, route: &str| table.access(&method, Some(route));
        for (method, route, scope) in [
            (Method::GET, "/jobs", Scope::Read),
            (Method::GET, "/jobs/{id}", Scope::Read),
            (Method::GET, "/jobs/{id}/log", Scope::Read),
            (Method::GET, "/jobs/{id}/events", Scope::Read),
            (Method::GET, "/cluster", Scope::Read),
            (Method::GET, "/cluster/primary", Scope::Read),
            (Method::GET, "/cluster/events", Scope::Read),
            (Method::POST, "/cluster/switchover", Scope::Apply),
            (Method::POST, "/cluster/restart", Scope::Apply),
            (Method::POST, "/cluster/reinit", Scope::Apply),
            (Method::POST, "/cluster/failover", Scope::Admin),
            (Method::GET, "/backup-schedule", Scope::Read),
            (Method::PUT, "/backup-schedule", Scope::Apply),
            (Method::DELETE, "/backup-schedule", Scope::Apply),
            (Method::POST, "/terraform/output", Scope::Read),
            (Method::POST, "/terraform/generate", Scope::Plan),
            (Method::POST, "/terraform/init", Scope::Plan),
            (Method::POST, "/terraform/plan", Scope::Plan),
            (Method::POST, "/ansible/configure", Scope::Plan),
            (Method::POST, "/terraform/apply", Scope::Apply),
            (Method::POST, "/ansible/run", Scope::Apply),
            (Method::POST, "/jobs/{id}/cancel", Scope::Apply),
            (Method::POST, "/jobs/{id}/approve", Scope::Apply),
            (Method::POST, "/jobs/{id}/reject", Scope::Apply),
            (Method::POST, "/deploy", Scope::Apply),
            (Method::POST, "/deploy/resume", Scope::Apply),
            (Method::POST, "/terraform/destroy", Scope::Admin),
            (Method::POST, "/ansible/vault", Scope::Admin),
            (Method::GET, "/workspaces", Scope::Read),
            (Method::POST, "/workspaces", Scope::Apply),
            (Method::GET, "/workspaces/{name}", Scope::Read),
            (Method::PATCH, "/workspaces/{name}", Scope::Apply),
            (Method::POST, "/workspaces/{name}/extend", Scope::Apply),
            (Method::DELETE, "/workspaces/{name}", Scope::Admin),
            (Method::GET, "/quotas", Scope::Read),
            (Method::PUT, "/quotas/{token_name}", Scope::Admin),
            (Method::DELETE, "/quotas/{token_name}", Scope::Admin),
            (Method::GET, "/webhooks", Scope::Admin),
            (Method::POST, "/webhooks", Scope::Admin),
            (Method::DELETE, "/webhooks/{id}", Scope::Admin),
            (Method::GET, "/webhooks/{id}/deliveries", Scope::Admin),
        ] {
            assert_eq!(
                needs(method.clone(), route),
                Access::Needs(scope),
                "{method} {route}"
            );
        }
    }

    #[test]
    fn the_api_document_its_viewer_and_health_are_open_and_metrics_is_configurable() {
        let table = table();
        for route in [
            "/openapi.json",
            "/docs",
            "/docs/",
            "/docs/{file}",
            "/health",
            "/ready",
            "/version",
        ] {
            assert_eq!(
                table.access(&Method::GET, Some(route)),
                Access::Open,
                "{route}"
            );
            assert_eq!(
                table.access(&Method::HEAD, Some(route)),
                Access::Open,
                "{route}"
            );
        }
        assert_eq!(
            table.access(&Method::GET, Some("/metrics")),
            Access::Metrics
        );
    }

    #[test]
    fn an_unrouted_path_or_method_needs_admin() {
        let table = table();
        let admin = Access::Needs(Scope::Admin);
        assert_eq!(table.access(&Method::GET, None), admin);
        assert_eq!(table.access(&Method::DELETE, Some("/jobs/{id}")), admin);
        assert_eq!(table.access(&Method::GET, Some("/terraform/plan")), admin);
        assert_eq!(
            table.access(&Method::GET, Some("/workspaces/{name}/openapi.json")),
            admin
        );
        assert_eq!(
            table.access(&Method::GET, Some("/workspaces/{name}/health")),
            admin
        );
    }

    #[test]
    fn a_workspace_route_needs_the_scope_of_the_same_route_on_default() {
        let table = table();
        for (route, scope) in [
            ("/workspaces/{name}/terraform/plan", Scope::Plan),
            ("/workspaces/{name}/terraform/destroy", Scope::Admin),
            ("/workspaces/{name}/deploy", Scope::Apply),
            ("/workspaces/{name}/cluster/switchover", Scope::Apply),
            ("/workspaces/{name}/cluster/failover", Scope::Admin),
        ] {
            assert_eq!(
                table.access(&Method::POST, Some(route)),
                Access::Needs(scope),
                "{route}"
            );
        }
        assert_eq!(
            table.access(&Method::GET, Some("/workspaces/{name}/cluster")),
            Access::Needs(Scope::Read)
        );
        assert_eq!(
            table.access(&Method::PUT, Some("/workspaces/{name}/backup-schedule")),
            Access::Needs(Scope::Apply)
        );
    }

    #[test]
    fn every_operation_declares_its_access() {
        let mut document = api().to_openapi();
        for (path, item) in document.paths.paths.iter_mut() {
            for (method, operation) in crate::auth::operations(item) {
                assert!(
                    Access::of(operation).is_some(),
                    "{method} {path} declares no access"
                );
            }
        }
    }

    #[test]
    fn destroys_body_is_the_run_options_and_the_confirmation() {
        use utoipa::PartialSchema;
        let properties = |schema: Value| -> Vec<String> {
            let mut keys: Vec<String> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        let run = serde_json::to_value(crate::domain::RunOptions::schema()).unwrap();
        let destroy = serde_json::to_value(crate::domain::DestroyOptions::schema()).unwrap();
        let mut expected = properties(run);
        expected.push("confirm".into());
        expected.sort();
        assert_eq!(properties(destroy.clone()), expected);
        assert_eq!(destroy["required"], json!(["confirm"]));
    }

    #[test]
    fn every_route_needing_a_scope_says_so() {
        let doc = serde_json::to_value(openapi_document()).unwrap();
        let plan = &doc["paths"]["/workspaces/{name}/terraform/plan"]["post"];
        assert_eq!(plan["security"], json!([{ "bearer": ["plan"] }]));
        assert_eq!(plan["parameters"][0]["name"], "name");
        assert_eq!(plan["operationId"], "workspace_terraform_plan");
        assert!(plan["responses"]["401"].is_object());
        let created = &doc["paths"]["/workspaces"]["post"]["responses"]["201"]["links"];
        assert_eq!(
            created["workspace_terraform_plan"]["parameters"]["name"],
            "$response.body#/name"
        );
        let accepted = &doc["components"]["responses"]["Accepted"]["links"];
        assert_eq!(
            accepted["cancel_job"]["parameters"]["id"],
            "$response.body#/job_id"
        );
        let health = &doc["paths"]["/health"]["get"];
        assert!(health.get("security").is_none());
        assert!(health["responses"].get("401").is_none());
    }

    #[test]
    fn configure_documents_the_type_it_reads_with_open_ended_settings() {
        let doc = serde_json::to_value(openapi_document()).unwrap();
        let schema = &doc["components"]["schemas"]["ConfigureRequest"];
        assert_eq!(
            schema["required"],
            json!(["bastion_key_path", "db_key_path"])
        );
        assert_eq!(
            schema["additionalProperties"]["$ref"],
            "#/components/schemas/PgSettingValue"
        );
    }
}
