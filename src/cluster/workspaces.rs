//! Workspaces: named environments (staging, prod, ...), each with its own
//! copy of a stack, tfvars, state, plans, inventory and lock. `default` is
//! the workspace of the original routes and always exists. Each has a
//! policy (owner, approvals, expiry) in the job store.

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::guardrails::{self, Policy, quotas};
use super::{Actor, App, Error};
use crate::domain::WorkspaceName;
use crate::workspace::{DEFAULT, Holder, Workspace, off_runtime};

/// A workspace, what is in it and its policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceInfo {
    pub name: String,
    /// The stack it runs (a directory next to `TERRAFORM_DIR`).
    pub stack: Option<String>,
    /// Resources in its terraform state.
    pub resources: usize,
    /// Whether `configure` has written its inventory.
    pub configured: bool,
    /// The job holding it (its id), `file update`, or null when idle.
    pub busy_with: Option<String>,
    /// The token that created it.
    pub owner: Option<String>,
    /// Its saved plans wait for another token's approval before apply.
    pub approval_required: bool,
    /// When the server destroys it (null: never).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// `active`, or `expired` once the server destroyed it at expiry.
    pub state: &'static str,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expired_at: Option<OffsetDateTime>,
}

impl WorkspaceInfo {
    fn with(mut self, policy: &Policy) -> WorkspaceInfo {
        self.owner = policy.owner.clone();
        self.approval_required = policy.approval_required;
        self.expires_at = policy.expires_at;
        self.expired_at = policy.expired_at;
        self.state = if policy.expired_at.is_some() {
            "expired"
        } else {
            "active"
        };
        self
    }
}

/// The workspace's files as they are (its policy left at defaults: see
/// [`describe`]).
fn files_info(app: &App, workspace: &Workspace) -> WorkspaceInfo {
    let stack_dir = app.stack_dir(workspace);
    let busy_with = match app.runner.locks().holder(workspace.name()) {
        Some(Holder::Job(id)) => Some(id.to_string()),
        Some(Holder::FileUpdate) => Some("file update".to_string()),
        None => None,
    };
    WorkspaceInfo {
        name: workspace.name().to_string(),
        stack: stack_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        resources: workspace.resource_count(),
        configured: workspace.ansible_dir().join("hosts.ini").is_file(),
        busy_with,
        owner: None,
        approval_required: false,
        expires_at: None,
        state: "active",
        expired_at: None,
    }
}

/// The workspace with its policy.
pub async fn describe(app: &App, workspace: &Workspace) -> Result<WorkspaceInfo, Error> {
    let policy = guardrails::policy(app, workspace).await?;
    Ok(files_info(app, workspace).with(&policy))
}

/// Every workspace with its policy, `default` first.
pub async fn describe_all(app: &App) -> Result<Vec<WorkspaceInfo>, Error> {
    let mut described = Vec::new();
    for info in list_workspaces(app) {
        let workspace = app.workspace(&info.name);
        let policy = guardrails::policy(app, &workspace).await?;
        described.push(info.with(&policy));
    }
    Ok(described)
}

/// Every workspace's files, `default` first, the others by name (policies
/// not read: [`describe_all`] has them).
pub fn list_workspaces(app: &App) -> Vec<WorkspaceInfo> {
    let mut names = vec![DEFAULT.to_string()];
    if let Ok(entries) = std::fs::read_dir(app.config.data_dir.join("workspaces")) {
        let mut others: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| n != DEFAULT && WorkspaceName::parse(n).is_ok())
            .filter(|n| app.workspace(n).exists())
            .collect();
        others.sort();
        names.extend(others);
    }
    names
        .iter()
        .map(|n| files_info(app, &app.workspace(n)))
        .collect()
}

/// What a new workspace's creator decides about it besides its name.
#[derive(Debug, Default)]
pub struct NewWorkspace {
    pub stack: Option<String>,
    pub approval_required: bool,
    pub expires_at: Option<OffsetDateTime>,
}

/// Creates a workspace running `stack` (default: the one `TERRAFORM_DIR`
/// names), owned by the caller, within its `workspaces` quota.
pub async fn create_workspace(
    app: &App,
    name: &str,
    new: NewWorkspace,
    actor: &Actor,
) -> Result<WorkspaceInfo, Error> {
    let name = WorkspaceName::parse(name).map_err(|e| Error::field("name", e))?;
    let stack = match new.stack {
        Some(stack) => stack,
        None => app
            .config
            .terraform_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::internal("TERRAFORM_DIR has no name"))?,
    };
    let known = known_stacks(app);
    if !known.contains(&stack) {
        return Err(Error::field(
            "stack",
            format!("must be one of: {}", known.join(", ")),
        ));
    }
    if let Some(at) = new.expires_at {
        check_expiry(app, at, actor)?;
    }
    app.check_storage()?;
    // Quotas are counted and the workspace recorded under one hold, so two
    // creations cannot both take the last place.
    let _guard = app.guardrails.lock().await;
    quotas::check_new_workspace(app, actor).await?;
    let workspace = app.workspace(name.as_str());
    // Held like a delete holds it: two requests creating the same name (or
    // one deleting it) take turns, and only one of them creates it. The hold
    // goes with the write, kept until it is done even if the client leaves.
    let hold = app.hold_for_files(&workspace)?;
    if workspace.exists() {
        return Err(Error::Conflict(format!(
            "workspace '{}' already exists",
            name.as_str()
        )));
    }
    let policy = Policy {
        owner: actor.name.clone(),
        approval_required: new.approval_required,
        expires_at: new.expires_at,
        ..Policy::default()
    };
    guardrails::save_policy(app, &workspace, &policy).await?;
    let created = off_runtime({
        let app = app.clone();
        let workspace = workspace.clone();
        move || {
            let _hold = hold;
            workspace.create(&stack)?;
            // Described before the hold goes, as this request leaves it: not
            // busy. (Described after, it could show the hold of the next
            // request for the name, one about to answer 409.)
            Ok(WorkspaceInfo {
                busy_with: None,
                ..files_info(&app, &workspace)
            })
        }
    })
    .await;
    match created {
        Ok(info) => Ok(info.with(&policy)),
        Err(err) => {
            let _ = guardrails::forget_policy(app, &workspace).await;
            let dir = app.config.data_dir.display().to_string();
            Err(Error::of_io(
                err,
                &dir,
                "the workspace could not be created",
            ))
        }
    }
}

/// Changes a workspace's policy: `approval_required`, `expires_at` (null:
/// never). Lifting a guardrail (approval off, expiry removed or set beyond
/// `WORKSPACE_MAX_EXTEND_HOURS`) needs the admin scope.
pub async fn update_workspace(
    app: &App,
    workspace: &Workspace,
    patch: &Map<String, Value>,
    actor: &Actor,
) -> Result<WorkspaceInfo, Error> {
    let mut problems = Map::new();
    let mut approval = None;
    let mut expiry = None;
    for (key, value) in patch {
        match key.as_str() {
            "approval_required" => match value.as_bool() {
                Some(on) => approval = Some(on),
                None => {
                    problems.insert(key.clone(), "must be true or false".into());
                }
            },
            "expires_at" => match value {
                Value::Null => expiry = Some(None),
                Value::String(text) => match parse_expiry(text) {
                    Ok(at) => expiry = Some(Some(at)),
                    Err(_) => {
                        problems.insert(key.clone(), format!("{EXPIRY_FORMAT}, or null").into());
                    }
                },
                _ => {
                    problems.insert(key.clone(), "must be an RFC 3339 time, or null".into());
                }
            },
            _ => {
                problems.insert(
                    key.clone(),
                    "is not a setting of a workspace: use approval_required or expires_at".into(),
                );
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::fields(problems));
    }
    if patch.is_empty() {
        return Err(Error::invalid(
            "nothing to change: send approval_required or expires_at",
        ));
    }
    if workspace.name() == DEFAULT {
        let field = if approval.is_some() {
            "approval_required"
        } else {
            "expires_at"
        };
        return Err(Error::field(
            field,
            "the default workspace takes its approval from DEFAULT_APPROVAL_REQUIRED and              does not expire",
        ));
    }
    let _guard = app.guardrails.lock().await;
    let mut policy = guardrails::policy(app, workspace).await?;
    if let Some(on) = approval {
        if !on && policy.approval_required && !actor.admin {
            return Err(admin_only("turning approval_required off"));
        }
        policy.approval_required = on;
    }
    match expiry {
        Some(None) if policy.expires_at.is_some() && !actor.admin => {
            return Err(admin_only("removing a workspace's expiry"));
        }
        Some(None) => policy.expires_at = None,
        Some(Some(at)) => {
            check_expiry(app, at, actor)?;
            policy.expires_at = Some(at);
            policy.expired_at = None;
            policy.destroy_job = None;
        }
        None => {}
    }
    guardrails::save_policy(app, workspace, &policy).await?;
    Ok(files_info(app, workspace).with(&policy))
}

const EXPIRY_FORMAT: &str = "must be an RFC 3339 time such as 2026-12-31T18:00:00Z";

/// Reads an `expires_at` as given.
pub fn parse_expiry(text: &str) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| Error::field("expires_at", EXPIRY_FORMAT))
}

/// An expiry must lie ahead, and without the admin scope within
/// `WORKSPACE_MAX_EXTEND_HOURS` from now.
fn check_expiry(app: &App, at: OffsetDateTime, actor: &Actor) -> Result<(), Error> {
    let now = OffsetDateTime::now_utc();
    if at <= now {
        return Err(Error::field("expires_at", "must be in the future"));
    }
    let max = app.config.max_extend_hours;
    if !actor.admin && at > now + time::Duration::hours(max as i64) {
        return Err(Error::field(
            "expires_at",
            format!(
                "must be within {max} hours from now (WORKSPACE_MAX_EXTEND_HOURS); later                  expiries need the admin scope"
            ),
        ));
    }
    Ok(())
}

fn admin_only(what: &str) -> Error {
    Error::Denied {
        message: format!("{what} needs the admin scope"),
        rule: "admin",
        quota: None,
    }
}

/// Deletes a workspace; refused for `default`, while its state still holds
/// resources (destroy first), or while a job holds it.
pub async fn delete_workspace(app: &App, workspace: &Workspace) -> Result<(), Error> {
    if workspace.name() == DEFAULT {
        return Err(Error::field(
            "name",
            "the default workspace cannot be deleted",
        ));
    }
    let hold = app.hold_for_files(workspace)?;
    let resources = workspace.resource_count();
    if resources > 0 {
        return Err(Error::Conflict(format!(
            "workspace '{}' still has {resources} resources in its state: destroy them first (POST /workspaces/{}/terraform/destroy)",
            workspace.name(),
            workspace.name()
        )));
    }
    // A whole tree (providers, state, plans): on the blocking pool, held
    // until it is gone even if the client leaves.
    let removing = workspace.clone();
    off_runtime(move || {
        let _hold = hold;
        removing.remove()
    })
    .await
    .map_err(Error::internal)?;
    super::backup::forget_schedule(app, workspace).await;
    super::guardrails::forget_policy(app, workspace).await
}

/// Directories next to `TERRAFORM_DIR` whose `*.tf` declare variables.
fn known_stacks(app: &App) -> Vec<String> {
    let mut stacks: Vec<String> = std::fs::read_dir(app.stacks_root())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter(|e| {
                    app.stacks
                        .get(&e.path())
                        .is_ok_and(|s| !s.variables.is_empty())
                })
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    stacks.sort();
    stacks
}
