//! `ansible-playbook` invocation: argv only, the vault password through a pipe.

use std::ffi::OsString;

use serde_json::{Value, json};

use crate::config::Config;
use crate::domain::PostgresqlVersion;
use crate::runner::{JobSpec, Secret, ToolLog};
use crate::store::JobKind;
use crate::workspace::Workspace;

/// The child reads the vault password from this descriptor.
pub const VAULT_FD: i32 = 3;

/// Builds the playbook job. Extra vars go as files and JSON, never as
/// `key=value` text that ansible would re-parse.
pub fn playbook_job(
    config: &Config,
    workspace: &Workspace,
    vault_password: Secret,
    version: PostgresqlVersion,
    request: Value,
) -> JobSpec {
    let dir = workspace.ansible_dir();
    let mut vars_file = OsString::from("@");
    vars_file.push(dir.join("postgresql.yml"));
    let mut vault_file = OsString::from("@");
    vault_file.push(absolute(&config.ansible_vault_file));
    let args: Vec<OsString> = vec![
        absolute(&config.ansible_dir.join("site.yml")).into(),
        "-i".into(),
        dir.join("hosts.ini").into(),
        "--vault-password-file".into(),
        format!("/dev/fd/{VAULT_FD}").into(),
        "-e".into(),
        vars_file,
        "-e".into(),
        vault_file,
        "-e".into(),
        json!({ "postgresql_version": version.get() })
            .to_string()
            .into(),
    ];
    JobSpec {
        kind: JobKind::AnsibleRun,
        workspace: workspace.name().to_string(),
        request,
        started_by: None,
        program: config.ansible_playbook_binary.clone(),
        args,
        cwd: absolute(&config.ansible_dir),
        env: vec![
            ("ANSIBLE_CONFIG".into(), dir.join("ansible.cfg").into()),
            ("ANSIBLE_HOME".into(), dir.join("home").into()),
            ("ANSIBLE_NOCOLOR".into(), "1".into()),
            ("ANSIBLE_FORCE_COLOR".into(), "0".into()),
            // Live logs: Python buffers stdout in a pipe otherwise.
            ("PYTHONUNBUFFERED".into(), "1".into()),
        ],
        secret_input: Some((VAULT_FD, vault_password)),
        log: ToolLog::Ansible,
        success_codes: vec![0],
        on_success: None,
        on_finish: None,
    }
}

fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
