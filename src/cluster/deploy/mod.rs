//! The deploy: generate → init → plan → apply → output → configure → run as
//! one job with named steps, and its resume from the step a failed deploy
//! stopped at. A plan awaiting approval stops the deploy after plan; once
//! approved, the resume applies it.
//!
//! Everything the steps need is checked before the first one starts, so a
//! bad request changes nothing. The deploy holds the workspace from its
//! first step to its last; each tool step is a job of its own, and the
//! deploy's result lists the steps as they go.

mod pipeline;
mod steps;

pub use steps::{DeployProgress, Step, StepFailure, StepRecord, StepStatus};

use serde_json::{Map, Value, json};

use super::error::files_error;
use super::guardrails::approval;
use super::terraform::Tfvars;
use super::{Actor, App, ConfigureInput, ConfigureRequest, Error};
use crate::domain::PostgresqlVersion;
use crate::runner::{JobHandle, PipelineSpec};
use crate::store::{JobFilter, JobId, JobKind, JobStatus};
use crate::workspace::Workspace;

/// What the steps work from, checked.
pub struct DeployInput {
    variables: Map<String, Value>,
    configure_body: ConfigureRequest,
    configure: ConfigureInput,
    version: PostgresqlVersion,
}

impl DeployInput {
    /// Checks everything the steps will need, naming each problem with its
    /// place in the body (`variables.replica_count`, `configure.db_key_path`).
    pub fn check(
        app: &App,
        workspace: &Workspace,
        variables: Map<String, Value>,
        configure_body: ConfigureRequest,
        version: Option<&Value>,
    ) -> Result<DeployInput, Error> {
        let mut problems = Map::new();
        match Tfvars::check(app, workspace, &variables) {
            Ok(_) => {}
            Err(Error::Variables {
                unknown,
                missing,
                invalid,
            }) => {
                for name in unknown {
                    problems.insert(
                        format!("variables.{name}"),
                        json!("is not a variable of the stack"),
                    );
                }
                for name in missing {
                    problems.insert(format!("variables.{name}"), json!("is required"));
                }
                for (name, reason) in invalid {
                    problems.insert(format!("variables.{name}"), reason);
                }
            }
            Err(other) => return Err(other),
        }
        let configure = match ConfigureInput::parse(&configure_body) {
            Ok(input) => Some(input),
            Err(Error::Invalid { fields, .. }) => {
                for (name, reason) in fields {
                    problems.insert(format!("configure.{name}"), reason);
                }
                None
            }
            Err(other) => return Err(other),
        };
        let version = match version {
            None => Some(PostgresqlVersion::DEFAULT),
            Some(raw) => PostgresqlVersion::parse(raw)
                .map_err(|e| problems.insert("postgresql_version".into(), json!(e)))
                .ok(),
        };
        if app.config.ansible_vault_password.is_none() {
            return Err(Error::invalid(
                "ANSIBLE_VAULT_PASSWORD is not set in the server's environment: the run step needs it",
            ));
        }
        match (configure, version) {
            (Some(configure), Some(version)) if problems.is_empty() => Ok(DeployInput {
                variables,
                configure_body,
                configure,
                version,
            }),
            _ => Err(Error::fields(problems)),
        }
    }

    /// The deploy job's request: what a resume starts again from. No secret
    /// is in it (key paths, not keys).
    fn record(&self, resumed_from: Option<JobId>) -> Value {
        let mut record = json!({
            "variables": self.variables,
            "configure": self.configure_body,
            "postgresql_version": self.version.get(),
        });
        if let Some(id) = resumed_from {
            record["resumed_from"] = json!(id);
        }
        record
    }
}

/// Starts a deploy of the workspace from its first step.
pub async fn deploy(
    app: &App,
    workspace: &Workspace,
    input: DeployInput,
    actor: &Actor,
) -> Result<JobHandle, Error> {
    crate::cluster::guardrails::quotas::check_db_hosts(app, workspace, actor, &input.variables)
        .await?;
    start(app, workspace, input, Step::Generate, None, actor).await
}

/// Goes on with the workspace's last deploy from the step it stopped at,
/// with the same variables, key paths, settings and version.
pub async fn resume(app: &App, workspace: &Workspace, actor: &Actor) -> Result<JobHandle, Error> {
    let filter = JobFilter {
        workspace: Some(workspace.name().to_string()),
        kind: Some(JobKind::Deploy),
        limit: 1,
        ..JobFilter::default()
    };
    let last = app
        .runner
        .store()
        .list(&filter)
        .await
        .map_err(Error::internal)?
        .jobs
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Conflict(format!(
                "workspace '{}' has no deploy to resume: start one with POST /deploy",
                workspace.name()
            ))
        })?;
    // A deploy that stopped for its plan's approval goes on with apply.
    let awaiting = last
        .result
        .as_ref()
        .and_then(|r| r.get("awaiting_approval"))
        .and_then(|id| serde_json::from_value::<JobId>(id.clone()).ok());
    match last.status {
        JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut | JobStatus::Interrupted => {
        }
        JobStatus::Succeeded if awaiting.is_some() => {}
        JobStatus::Succeeded => {
            return Err(Error::Conflict(format!(
                "the last deploy ({}) succeeded: there is nothing to resume",
                last.id
            )));
        }
        JobStatus::Queued | JobStatus::Running => {
            return Err(Error::Busy {
                workspace: workspace.name().to_string(),
                job_id: last.id,
            });
        }
    }
    if let Some(plan) = awaiting {
        approval::check_approved(app, plan).await?;
    }
    let stopped_at = Step::stopped_at(last.result.as_ref());
    let recorded = |name: &str| match last.request.get(name) {
        Some(Value::Object(map)) => Ok(map.clone()),
        _ => Err(Error::internal(format!(
            "deploy {} has no {name} in its request",
            last.id
        ))),
    };
    let configure = serde_json::from_value(Value::Object(recorded("configure")?))
        .map_err(|e| Error::internal(format!("deploy {}: configure: {e}", last.id)))?;
    let input = DeployInput::check(
        app,
        workspace,
        recorded("variables")?,
        configure,
        last.request.get("postgresql_version"),
    )?;
    let from = match awaiting {
        Some(_) => Step::Apply,
        None => stopped_at.resume_point(),
    };
    start(app, workspace, input, from, Some(last.id), actor).await
}

async fn start(
    app: &App,
    workspace: &Workspace,
    input: DeployInput,
    from: Step,
    resumed_from: Option<JobId>,
    actor: &Actor,
) -> Result<JobHandle, Error> {
    app.check_storage()?;
    workspace.ensure().map_err(files_error(workspace))?;
    let spec = PipelineSpec {
        kind: JobKind::Deploy,
        workspace: workspace.name().to_string(),
        request: input.record(resumed_from),
        started_by: actor.name.clone(),
        request_id: actor.request_id.clone(),
    };
    let deploy = pipeline::Deploy::new(app.clone(), workspace.clone(), actor.clone(), input);
    app.runner
        .submit_pipeline(spec, move |pipeline| {
            deploy.run(pipeline, from, resumed_from)
        })
        .await
        .map_err(|err| app.refusal(err))
}
