//! Workspaces: named environments (staging, prod, ...), each with its own
//! copy of a stack, tfvars, state, plans, inventory and lock. `default` is
//! the workspace of the original routes and always exists.

use serde::Serialize;
use utoipa::ToSchema;

use super::{App, Error};
use crate::domain::WorkspaceName;
use crate::workspace::{DEFAULT, Holder, Workspace, off_runtime};

/// A workspace and what is in it.
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
}

pub fn describe(app: &App, workspace: &Workspace) -> WorkspaceInfo {
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
    }
}

/// Every workspace, `default` first, the others by name.
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
        .map(|n| describe(app, &app.workspace(n)))
        .collect()
}

/// Creates a workspace running `stack` (default: the one `TERRAFORM_DIR`
/// names).
pub async fn create_workspace(
    app: &App,
    name: &str,
    stack: Option<String>,
) -> Result<WorkspaceInfo, Error> {
    let name = WorkspaceName::parse(name).map_err(|e| Error::field("name", e))?;
    let stack = match stack {
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
    app.check_storage()?;
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
    off_runtime({
        let app = app.clone();
        move || {
            let _hold = hold;
            workspace.create(&stack)?;
            // Described before the hold goes, as this request leaves it: not
            // busy. (Described after, it could show the hold of the next
            // request for the name, one about to answer 409.)
            Ok(WorkspaceInfo {
                busy_with: None,
                ..describe(&app, &workspace)
            })
        }
    })
    .await
    .map_err(|err| {
        let dir = app.config.data_dir.display().to_string();
        Error::of_io(err, &dir, "the workspace could not be created")
    })
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
