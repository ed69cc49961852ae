//! The terraform side of a workspace: `terraform.tfvars` checked against
//! the stack and written, and the jobs of init, plan, apply, destroy and
//! output with what each keeps (the saved plan, applied once).

use serde_json::{Map, Value, json};

use super::error::files_error;
use super::guardrails::{self, approval};
use super::{Actor, App, Error};
use crate::domain::RunOptions;
use crate::domain::tfvars::conform;
use crate::runner::{JobHandle, JobSpec};
use crate::store::JobStatus;
use crate::tools::terraform::{self, Command, Outputs};
use crate::workspace::{LockGuard, SavedPlan, Workspace, off_runtime, write_atomic};

/// How long `terraform show -json` may take to read a saved plan.
const SHOW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What `generate` wrote, besides the variables given.
#[derive(Debug)]
pub struct Generated {
    /// The stack's defaults of the variables not given.
    pub defaults: Map<String, Value>,
}

/// Checks the variables against the stack's `variables.tf` and writes
/// `terraform.tfvars`; nothing is written when one is refused, or when
/// the caller's `db_hosts` quota would be exceeded. A plan saved
/// from other variables can no longer be applied.
pub async fn generate(
    app: &App,
    workspace: &Workspace,
    given: &Map<String, Value>,
    actor: &Actor,
) -> Result<Generated, Error> {
    let tfvars = Tfvars::check(app, workspace, given)?;
    guardrails::expiry::check_usable(app, workspace).await?;
    guardrails::quotas::check_db_hosts(app, workspace, actor, given).await?;
    app.check_storage()?;
    let hold = app.hold_for_files(workspace)?;
    tfvars.write(app, workspace, Some(hold)).await?;
    Ok(Generated {
        defaults: tfvars.defaults,
    })
}

/// Variables checked against the stack's `variables.tf`, rendered as
/// `terraform.tfvars`.
pub(crate) struct Tfvars {
    rendered: String,
    /// The stack's defaults for what was not given.
    pub defaults: Map<String, Value>,
}

impl Tfvars {
    /// Every unknown, missing and invalid variable at once.
    pub(crate) fn check(
        app: &App,
        workspace: &Workspace,
        given: &Map<String, Value>,
    ) -> Result<Tfvars, Error> {
        let stack_dir = app.stack_dir(workspace);
        let stack = app.stacks.get(&stack_dir).map_err(Error::internal)?;

        let unknown: Vec<String> = given
            .keys()
            .filter(|name| stack.get(name).is_none())
            .cloned()
            .collect();
        let missing: Vec<String> = stack
            .variables
            .iter()
            .filter(|v| v.is_required() && given.get(&v.name).is_none_or(Value::is_null))
            .map(|v| v.name.clone())
            .collect();
        let mut invalid = Map::new();
        // Declaration order, so the file reads like variables.tf.
        let mut values = Map::new();
        for spec in &stack.variables {
            let Some(value) = given.get(&spec.name) else {
                continue;
            };
            if spec.is_required() && value.as_str().is_some_and(|v| v.trim().is_empty()) {
                invalid.insert(
                    spec.name.clone(),
                    json!("is required and must not be empty"),
                );
                continue;
            }
            match conform(value, &spec.ty).and_then(|v| spec.validate(&v).map(|_| v)) {
                Ok(v) => {
                    values.insert(spec.name.clone(), v);
                }
                Err(reason) => {
                    invalid.insert(spec.name.clone(), json!(reason));
                }
            }
        }
        if !unknown.is_empty() || !missing.is_empty() || !invalid.is_empty() {
            return Err(Error::Variables {
                unknown,
                missing,
                invalid,
            });
        }
        let rendered = app
            .renderer
            .render("terraform.tfvars.j2", json!({ "variables": values }))
            .map_err(Error::internal)?;
        let defaults = stack
            .variables
            .iter()
            .filter(|v| !given.contains_key(&v.name))
            .filter_map(|v| v.default.clone().map(|d| (v.name.clone(), d)))
            .collect();
        Ok(Tfvars { rendered, defaults })
    }

    /// Mirrors the stack into the workspace and writes the file. The caller
    /// holds the workspace; `hold`, its guard when the caller may be dropped
    /// (a request whose client goes away), is kept until the file is
    /// written. A plan made from other variables is refused by apply from
    /// now on: it records the digest of the tfvars it was made from.
    pub(crate) async fn write(
        &self,
        app: &App,
        workspace: &Workspace,
        hold: Option<LockGuard>,
    ) -> Result<(), Error> {
        let stack = app.stack_dir(workspace);
        let files_error = files_error(workspace);
        let workspace = workspace.clone();
        let rendered = self.rendered.clone();
        off_runtime(move || {
            let _hold = hold;
            workspace.sync_stack(&stack)?;
            write_atomic(&workspace.tfvars(), rendered.as_bytes())
        })
        .await
        .map_err(files_error)
    }
}

/// `terraform plan`'s `-detailed-exitcode`: 2 when the plan changes something.
pub fn plan_changes(exit_code: Option<i32>) -> bool {
    exit_code == Some(2)
}

/// Starts a terraform command on the workspace, once its options are
/// acceptable (only destroy takes, and needs, a confirmation).
pub async fn start_command(
    app: &App,
    workspace: &Workspace,
    command: Command,
    options: &RunOptions,
    actor: &Actor,
) -> Result<JobHandle, Error> {
    check_confirmation(command, options.confirm.as_deref(), workspace.name())?;
    let request = json!({ "output": options.output, "async": options.run_async });
    let mut spec = run_spec(app, workspace, command, request, false).await?;
    actor.stamp(&mut spec);
    spec.capture_stdout |= options.output && !options.run_async;
    let handle = app.submit(spec).await?;
    if command == Command::Plan {
        approval::announce_when_done(app, handle.clone(), workspace.name(), actor.name.clone());
    }
    Ok(handle)
}

/// The job of a terraform command. `held`: the caller (a deploy) already
/// holds the workspace; otherwise it is held while the stack is mirrored.
/// A plan records what it changes (`summary`) and whether it awaits
/// approval; apply refuses a plan awaiting it.
pub(crate) async fn run_spec(
    app: &App,
    workspace: &Workspace,
    command: Command,
    request: Value,
    held: bool,
) -> Result<JobSpec, Error> {
    let stack_dir = app.stack_dir(workspace);
    let files_error = files_error(workspace);
    workspace.ensure().map_err(&files_error)?;
    let spec = match command {
        Command::Init => {
            let _hold = hold(app, workspace, held)?;
            workspace.sync_stack(&stack_dir).map_err(&files_error)?;
            terraform::job(&app.config, workspace, command, None, request)
        }
        Command::Plan => {
            // Read when the plan starts: only a plan made under approval awaits one.
            let approval_required = guardrails::policy(app, workspace).await?.approval_required;
            {
                let _hold = hold(app, workspace, held)?;
                workspace.sync_stack(&stack_dir).map_err(&files_error)?;
            }
            let plan_file = workspace.plan_file(&uuid::Uuid::new_v4().to_string());
            let mut spec =
                terraform::job(&app.config, workspace, command, Some(&plan_file), request);
            let ws = workspace.clone();
            let saved = plan_file.clone();
            // The variables the plan is made from: the workspace is held by
            // this job until it ends, so they cannot change under it.
            let tfvars_sha256 = workspace.tfvars_sha256();
            let config = app.config.clone();
            let secret_env = app.runner.config().secret_env.clone();
            spec.on_success = Some(Box::new(move |out| {
                let summary =
                    terraform::summarize_plan(&config, &ws, &saved, &secret_env, SHOW_TIMEOUT)
                        .map_err(|e| format!("could not summarize the saved plan: {e}"))?;
                // Named after its job, so an approval names the plan it is for.
                let named = ws.plan_file(&out.job_id.to_string());
                std::fs::rename(&saved, &named)
                    .map_err(|e| format!("could not keep the saved plan: {e}"))?;
                ws.clear_latest_plan();
                ws.set_latest_plan(&named, &tfvars_sha256).map_err(|e| {
                    let _ = std::fs::remove_file(&named);
                    format!("could not record the saved plan: {e}")
                })?;
                let mut result =
                    json!({ "changes": plan_changes(out.exit_code), "summary": summary });
                if approval_required {
                    result[approval::REQUIRED] = json!(true);
                }
                Ok(Some(result))
            }));
            spec.on_finish = Some(Box::new(move |status| {
                if status != JobStatus::Succeeded {
                    let _ = std::fs::remove_file(&plan_file);
                }
            }));
            spec
        }
        Command::Apply => {
            let saved = plan_to_apply(workspace)?;
            approval::check_apply(app, workspace, &saved).await?;
            // Exactly the plan checked, even if another is saved meanwhile.
            let plan_file = saved.path;
            let mut spec =
                terraform::job(&app.config, workspace, command, Some(&plan_file), request);
            let ws = workspace.clone();
            // A saved plan can be applied once, whatever the outcome.
            spec.on_finish = Some(Box::new(move |_| ws.clear_latest_plan()));
            spec
        }
        Command::Destroy => {
            let mut spec = terraform::job(&app.config, workspace, command, None, request);
            let ws = workspace.clone();
            spec.on_finish = Some(Box::new(move |_| ws.clear_latest_plan()));
            spec
        }
        Command::Output => {
            let mut spec = terraform::job(&app.config, workspace, command, None, request);
            spec.on_success = Some(Box::new(|out| {
                let outputs = Outputs::parse(&out.stdout)?;
                Ok(Some(
                    json!({ "outputs": outputs.masked(), "sensitive": outputs.sensitive }),
                ))
            }));
            spec
        }
    };
    Ok(spec)
}

/// The saved plan, made from the current `terraform.tfvars`.
fn plan_to_apply(workspace: &Workspace) -> Result<SavedPlan, Error> {
    let Some(saved) = workspace.latest_plan() else {
        return Err(Error::Conflict(
            "there is no saved plan to apply: call /terraform/plan first".into(),
        ));
    };
    if saved.tfvars_sha256 != workspace.tfvars_sha256() {
        return Err(Error::Conflict(
            "the saved plan was made before terraform.tfvars last changed: \
             call /terraform/plan again, then apply"
                .into(),
        ));
    }
    Ok(saved)
}

fn hold(app: &App, workspace: &Workspace, held: bool) -> Result<Option<LockGuard>, Error> {
    if held {
        Ok(None)
    } else {
        app.hold_for_files(workspace).map(Some)
    }
}

/// `destroy` needs `"confirm": "<workspace name>"`; the other commands take
/// no confirmation.
fn check_confirmation(
    command: Command,
    confirm: Option<&str>,
    workspace: &str,
) -> Result<(), Error> {
    match (command, confirm) {
        (Command::Destroy, Some(given)) if given == workspace => Ok(()),
        (Command::Destroy, Some(_)) => Err(Error::field(
            "confirm",
            format!(
                "does not match the workspace: send {{\"confirm\": \"{workspace}\"}} to destroy \
                 every resource of workspace '{workspace}'"
            ),
        )),
        (Command::Destroy, None) => Err(Error::field(
            "confirm",
            format!(
                "is required: destroy removes every resource of workspace '{workspace}'; \
                 send {{\"confirm\": \"{workspace}\"}} to go ahead"
            ),
        )),
        (_, Some(_)) => Err(Error::field(
            "confirm",
            format!("only destroy takes a confirmation, not {}", command.name()),
        )),
        (_, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(result: Result<(), Error>) -> Option<String> {
        match result {
            Err(Error::Invalid { fields, .. }) => fields.keys().next().cloned(),
            _ => None,
        }
    }

    #[test]
    fn destroy_needs_the_workspace_name_and_nothing_else_takes_a_confirmation() {
        assert!(check_confirmation(Command::Destroy, Some("prod"), "prod").is_ok());
        for given in [None, Some("Prod"), Some("")] {
            let refused = check_confirmation(Command::Destroy, given, "prod");
            assert_eq!(refused_field(refused).as_deref(), Some("confirm"));
        }
        let refused = check_confirmation(Command::Plan, Some("prod"), "prod");
        assert_eq!(refused_field(refused).as_deref(), Some("confirm"));
        assert!(check_confirmation(Command::Plan, None, "prod").is_ok());
    }

    #[test]
    fn only_a_detailed_exit_code_of_2_means_changes() {
        assert!(plan_changes(Some(2)));
        assert!(!plan_changes(Some(0)));
        assert!(!plan_changes(None));
    }
}
