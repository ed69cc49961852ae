//! Terraform (or OpenTofu) invocations.

use std::ffi::OsString;
use std::path::Path;

use serde_json::{Map, Value, json};

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
        env: vec![
            ("TF_IN_AUTOMATION".into(), "1".into()),
            ("TF_INPUT".into(), "0".into()),
            ("CHECKPOINT_DISABLE".into(), "1".into()),
        ],
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
    fn output_that_is_not_json_is_an_error() {
        assert!(Outputs::parse("Warning: No outputs found").is_err());
    }
}
