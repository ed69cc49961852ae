//! Terraform (or OpenTofu) invocations.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::config::Config;
use crate::domain::tfvars::to_hcl;
use crate::runner::{JobSpec, ToolLog};
use crate::store::JobKind;
use crate::workspace::Workspace;

/// The terraform subcommands the API runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Init,
    Plan,
    Apply,
    Destroy,
    Output,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Init => "init",
            Command::Plan => "plan",
            Command::Apply => "apply",
            Command::Destroy => "destroy",
            Command::Output => "output",
        }
    }

    pub fn kind(self) -> JobKind {
        match self {
            Command::Init => JobKind::TerraformInit,
            Command::Plan => JobKind::TerraformPlan,
            Command::Apply => JobKind::TerraformApply,
            Command::Destroy => JobKind::TerraformDestroy,
            Command::Output => JobKind::TerraformOutput,
        }
    }
}

/// The environment of every terraform run: no prompts, no update check.
const TERRAFORM_ENV: [(&str, &str); 3] = [
    ("TF_IN_AUTOMATION", "1"),
    ("TF_INPUT", "0"),
    ("CHECKPOINT_DISABLE", "1"),
];

/// Builds the job for `command` in `workspace`. `plan_file` is the plan a plan
/// job writes, or the saved plan an apply job applies.
pub fn job(
    config: &Config,
    workspace: &Workspace,
    command: Command,
    plan_file: Option<&Path>,
    request: Value,
) -> JobSpec {
    let mut args: Vec<OsString> = vec![command.name().into()];
    let mut success_codes = vec![0];
    match command {
        Command::Init => args.extend(["-input=false".into(), "-no-color".into()]),
        Command::Plan => {
            let out = plan_file.expect("a plan job writes a plan file");
            args.extend([
                "-input=false".into(),
                "-no-color".into(),
                "-detailed-exitcode".into(),
            ]);
            let mut flag = OsString::from("-out=");
            flag.push(out);
            args.push(flag);
            // 0: no changes, 2: changes; both are a successful plan.
            success_codes.push(2);
        }
        Command::Apply => {
            args.extend(["-input=false".into(), "-no-color".into()]);
            args.push(plan_file.expect("apply applies a saved plan").into());
        }
        Command::Destroy => args.extend([
            "-input=false".into(),
            "-no-color".into(),
            "-auto-approve".into(),
        ]),
        Command::Output => args.extend(["-no-color".into(), "-json".into()]),
    }
    JobSpec {
        kind: command.kind(),
        workspace: workspace.name().to_string(),
        request,
        started_by: None,
        request_id: None,
        parent: None,
        program: config.terraform_binary.clone(),
        args,
        cwd: workspace.terraform_dir(),
        env: TERRAFORM_ENV
            .iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect(),
        secret_input: None,
        stdin_input: None,
        extra_secrets: Vec::new(),
        log: ToolLog::Terraform,
        // `output -json` is parsed from it.
        capture_stdout: command == Command::Output,
        log_stdout: command != Command::Output,
        success_codes,
        on_success: None,
        on_finish: None,
    }
}

/// The parsed `terraform output -json`: values by name, sensitive ones masked.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// Every output's value, sensitive ones included (for the server's own use).
    pub values: Map<String, Value>,
    pub sensitive: Vec<String>,
}

impl Outputs {
    pub fn parse(stdout: &str) -> Result<Outputs, String> {
        let parsed: Map<String, Value> = serde_json::from_str(stdout).map_err(|e| {
            format!("terraform output -json printed something that is not a JSON object: {e}")
        })?;
        let mut outputs = Outputs::default();
        for (name, entry) in parsed {
            if entry.get("sensitive").and_then(Value::as_bool) == Some(true) {
                outputs.sensitive.push(name.clone());
            }
            outputs
                .values
                .insert(name, entry.get("value").cloned().unwrap_or(Value::Null));
        }
        Ok(outputs)
    }

    /// Values for an answer: sensitive ones replaced by a marker.
    pub fn masked(&self) -> Map<String, Value> {
        self.values
            .iter()
            .map(|(name, value)| {
                let shown = if self.sensitive.contains(name) {
                    json!("(sensitive value)")
                } else {
                    value.clone()
                };
                (name.clone(), shown)
            })
            .collect()
    }

    /// `name = value` lines like `terraform output` prints them.
    pub fn text(&self) -> String {
        Outputs::text_of(&self.masked())
    }

    pub fn text_of(values: &Map<String, Value>) -> String {
        values
            .iter()
            .map(|(name, value)| format!("{name} = {}\n", to_hcl(value)))
            .collect()
    }
}

/// What a saved plan does, from `terraform show -json`: the counts
/// terraform prints ("Plan: 1 to add, ...") and each resource it touches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"add": 1, "change": 0, "destroy": 0,
    "resources": [{"address": "null_resource.cluster", "action": "create"}]}))]
pub struct PlanSummary {
    /// Resources created (a replacement counts here and in `destroy`).
    pub add: u32,
    /// Resources updated in place.
    pub change: u32,
    /// Resources destroyed.
    pub destroy: u32,
    /// Each resource the plan touches, in terraform's order.
    pub resources: Vec<ResourceChange>,
}

/// One resource a plan touches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResourceChange {
    /// Its address, e.g. `module.db.aws_instance.replica[1]`.
    pub address: String,
    /// `create`, `update`, `delete`, `replace`, or `forget` (left in state
    /// no longer managed).
    pub action: String,
}

impl PlanSummary {
    /// Reads `terraform show -json <plan file>`: `resource_changes[].change.actions`
    /// is `["create"]`, `["update"]`, `["delete"]`, a replacement (`delete` and
    /// `create` in either order), or `["no-op"]` / `["read"]`, which change
    /// nothing and are left out.
    pub fn parse(json: &str) -> Result<PlanSummary, String> {
        let plan: Value = serde_json::from_str(json)
            .map_err(|e| format!("terraform show -json printed something that is not JSON: {e}"))?;
        let mut summary = PlanSummary::default();
        let changes = match plan.get("resource_changes") {
            None | Some(Value::Null) => return Ok(summary),
            Some(Value::Array(changes)) => changes,
            Some(_) => return Err("terraform show -json: resource_changes is not a list".into()),
        };
        for change in changes {
            let address = change["address"]
                .as_str()
                .ok_or("terraform show -json: a resource change has no address")?;
            let actions: Vec<&str> = change["change"]["actions"]
                .as_array()
                .ok_or_else(|| format!("terraform show -json: {address} has no actions"))?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let action = match actions.as_slice() {
                ["create"] => {
                    summary.add += 1;
                    "create"
                }
                ["update"] => {
                    summary.change += 1;
                    "update"
                }
                ["delete"] => {
                    summary.destroy += 1;
                    "delete"
                }
                ["delete", "create"] | ["create", "delete"] => {
                    summary.add += 1;
                    summary.destroy += 1;
                    "replace"
                }
                ["no-op"] | ["read"] | [] => continue,
                ["forget"] => "forget",
                other => {
                    return Err(format!(
                        "terraform show -json: {address} has actions {other:?}, unknown here"
                    ));
                }
            };
            summary.resources.push(ResourceChange {
                address: address.to_string(),
                action: action.to_string(),
            });
        }
        Ok(summary)
    }
}

/// Runs `terraform show -json <plan file>` in the workspace and summarizes
/// the plan. Blocking (call it off the async runtime); its output holds the
/// plan's values, sensitive ones included, so it is parsed and dropped,
/// never logged. Killed after `timeout`.
pub fn summarize_plan(
    config: &Config,
    workspace: &Workspace,
    plan_file: &Path,
    secret_env: &[String],
    timeout: Duration,
) -> Result<PlanSummary, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command as Process, Stdio};

    let mut command = Process::new(&config.terraform_binary);
    command
        .args(["show", "-json", "-no-color"])
        .arg(plan_file)
        .current_dir(workspace.terraform_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for key in secret_env {
        command.env_remove(key);
    }
    for (key, value) in TERRAFORM_ENV {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start terraform show: {e}"))?;
    // Read both pipes while waiting: a large plan would fill one and block.
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let group = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "terraform show did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("could not wait for terraform show: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        return Err(format!(
            "terraform show failed ({status}): {}",
            stderr.trim()
        ));
    }
    PlanSummary::parse(&String::from_utf8_lossy(&stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_outputs_are_masked_in_answers_but_kept_for_the_server() {
        let outputs = Outputs::parse(
            r#"{"addr": {"value": "10.0.0.1", "sensitive": false, "type": "string"},
                "pw": {"value": "s3cret", "sensitive": true, "type": "string"}}"#,
        )
        .unwrap();
        assert_eq!(outputs.values["pw"], "s3cret");
        assert_eq!(outputs.masked()["pw"], "(sensitive value)");
        assert!(outputs.text().contains("addr = \"10.0.0.1\""));
        assert!(!outputs.text().contains("s3cret"));
    }

    #[test]
    fn a_plan_summary_counts_as_terraform_does_and_lists_what_changes() {
        let summary = PlanSummary::parse(
            r#"{"format_version": "1.2", "resource_changes": [
                {"address": "null_resource.new", "change": {"actions": ["create"]}},
                {"address": "aws_instance.db[0]", "change": {"actions": ["update"]}},
                {"address": "aws_eip.old", "change": {"actions": ["delete"]}},
                {"address": "aws_instance.db[1]", "change": {"actions": ["delete", "create"]}},
                {"address": "aws_instance.db[2]", "change": {"actions": ["create", "delete"]}},
                {"address": "aws_vpc.main", "change": {"actions": ["no-op"]}},
                {"address": "data.aws_ami.ubuntu", "change": {"actions": ["read"]}},
                {"address": "aws_s3_bucket.kept", "change": {"actions": ["forget"]}}]}"#,
        )
        .unwrap();
        assert_eq!((summary.add, summary.change, summary.destroy), (3, 1, 3));
        let listed: Vec<(&str, &str)> = summary
            .resources
            .iter()
            .map(|r| (r.address.as_str(), r.action.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("null_resource.new", "create"),
                ("aws_instance.db[0]", "update"),
                ("aws_eip.old", "delete"),
                ("aws_instance.db[1]", "replace"),
                ("aws_instance.db[2]", "replace"),
                ("aws_s3_bucket.kept", "forget"),
            ]
        );
        assert_eq!(
            serde_json::to_value(&summary.resources[3]).unwrap(),
            json!({"address": "aws_instance.db[1]", "action": "replace"})
        );
    }

    #[test]
    fn a_plan_without_changes_is_an_empty_summary() {
        for empty in [
            r#"{"format_version": "1.2"}"#,
            r#"{"resource_changes": null}"#,
        ] {
            assert_eq!(PlanSummary::parse(empty).unwrap(), PlanSummary::default());
        }
        let only_reads = r#"{"resource_changes": [
            {"address": "data.x.y", "change": {"actions": ["read"]}}]}"#;
        assert!(PlanSummary::parse(only_reads).unwrap().resources.is_empty());
    }

    #[test]
    fn a_plan_summary_refuses_what_it_cannot_read() {
        for bad in [
            "Error: no plan",
            r#"{"resource_changes": {}}"#,
            r#"{"resource_changes": [{"change": {"actions": ["create"]}}]}"#,
            r#"{"resource_changes": [{"address": "a.b", "change": {}}]}"#,
            r#"{"resource_changes": [{"address": "a.b", "change": {"actions": ["move"]}}]}"#,
        ] {
            assert!(PlanSummary::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn output_that_is_not_json_is_an_error() {
        assert!(Outputs::parse("Warning: No outputs found").is_err());
    }
}
