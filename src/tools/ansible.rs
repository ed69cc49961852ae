//! `ansible-playbook` invocation: argv only, the vault password through a pipe.

use std::ffi::OsString;

use serde_json::{Value, json};

use crate::config::Config;
use crate::domain::PostgresqlVersion;
use crate::runner::{JobSpec, ToolLog};
use crate::secret::Secret;
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
        request_id: None,
        parent: None,
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
        stdin_input: None,
        extra_secrets: Vec::new(),
        log: ToolLog::Ansible,
        capture_stdout: false,
        log_stdout: true,
        success_codes: vec![0],
        on_success: None,
        on_finish: None,
    }
}

/// Builds the read-only status job: `status.yml` reads replication state
/// from every DB host and writes it as JSON to `report_file`. No vault.
pub fn status_job(
    config: &Config,
    workspace: &Workspace,
    version: PostgresqlVersion,
    report_file: &std::path::Path,
    request: Value,
) -> JobSpec {
    let dir = workspace.ansible_dir();
    let mut vars_file = OsString::from("@");
    vars_file.push(dir.join("postgresql.yml"));
    let args: Vec<OsString> = vec![
        absolute(&config.ansible_dir.join("status.yml")).into(),
        "-i".into(),
        dir.join("hosts.ini").into(),
        "-e".into(),
        vars_file,
        "-e".into(),
        json!({ "postgresql_version": version.get(), "pgcluster_status_file": report_file })
            .to_string()
            .into(),
    ];
    let mut spec = playbook_job(
        config,
        workspace,
        Secret::new(String::new()),
        version,
        request,
    );
    spec.kind = JobKind::AnsibleStatus;
    spec.args = args;
    spec.secret_input = None;
    spec
}

/// Builds a cluster operation job: `playbook` (`operate.yml`, `backup.yml`,
/// `restore.yml`) with the vault and the operation's inputs as JSON extra
/// vars (`pgcluster_operation`, `pgbackrest_backup_type`, ... and
/// `pgcluster_result_file`, where it writes its result).
pub fn operation_job(
    config: &Config,
    workspace: &Workspace,
    vault_password: Secret,
    kind: JobKind,
    playbook: &str,
    operation_vars: &Value,
    request: Value,
) -> JobSpec {
    let mut spec = playbook_job(
        config,
        workspace,
        vault_password,
        PostgresqlVersion::DEFAULT,
        request,
    );
    spec.kind = kind;
    spec.args[0] = absolute(&config.ansible_dir.join(playbook)).into();
    // The last extra vars (the PostgreSQL version) become the operation's.
    if let Some(last) = spec.args.last_mut() {
        *last = operation_vars.to_string().into();
    }
    spec
}

fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `ansible-vault`, next to the configured `ansible-playbook` (or on PATH).
pub fn vault_binary(config: &Config) -> std::path::PathBuf {
    let playbook = &config.ansible_playbook_binary;
    match playbook.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("ansible-vault"),
        _ => "ansible-vault".into(),
    }
}

/// Encrypts `plaintext` (piped on stdin) into `output` with the vault
/// password (piped as fd 3). Nothing secret touches argv or a file.
pub fn vault_encrypt_job(
    config: &Config,
    workspace: &Workspace,
    vault_password: Secret,
    plaintext: Secret,
    output: &std::path::Path,
    secrets: Vec<Secret>,
) -> JobSpec {
    JobSpec {
        kind: JobKind::AnsibleVault,
        workspace: workspace.name().to_string(),
        request: json!({ "vault_file": config.ansible_vault_file }),
        started_by: None,
        request_id: None,
        parent: None,
        program: vault_binary(config),
        args: vec![
            "encrypt".into(),
            "--vault-password-file".into(),
            format!("/dev/fd/{VAULT_FD}").into(),
            "--output".into(),
            output.into(),
            "-".into(),
        ],
        cwd: absolute(&config.ansible_dir),
        env: vec![("ANSIBLE_NOCOLOR".into(), "1".into())],
        secret_input: Some((VAULT_FD, vault_password)),
        stdin_input: Some(plaintext),
        extra_secrets: secrets,
        log: ToolLog::Ansible,
        capture_stdout: false,
        log_stdout: true,
        success_codes: vec![0],
        on_success: None,
        on_finish: None,
    }
}

/// The secret values of the vault file (every top-level `key: value`), read
/// with `ansible-vault view`, so they can be masked in job output.
pub async fn vault_secrets(
    config: &Config,
    vault_password: &Secret,
) -> Result<Vec<Secret>, String> {
    let mut secrets = Vec::new();
    for (key, value) in vault_values(config, vault_password).await? {
        if key == "replication_password" {
            secrets.extend(derived_secrets(&value));
        }
        secrets.push(Secret::new(value));
    }
    Ok(secrets)
}

/// The vault's top-level `key: value` pairs, decrypted by `ansible-vault
/// view` with the password piped.
pub async fn vault_values(
    config: &Config,
    vault_password: &Secret,
) -> Result<Vec<(String, String)>, String> {
    let args: Vec<OsString> = vec![
        "view".into(),
        "--vault-password-file".into(),
        format!("/dev/fd/{VAULT_FD}").into(),
        absolute(&config.ansible_vault_file).into(),
    ];
    let secret_env: Vec<String> = crate::config::SECRET_ENV
        .iter()
        .map(|s| s.to_string())
        .collect();
    let plaintext = crate::runner::capture_secret_output(
        &vault_binary(config),
        &args,
        &secret_env,
        Some((VAULT_FD, vault_password)),
        std::time::Duration::from_secs(60),
    )
    .await?;
    Ok(plaintext
        .lines()
        .filter(|line| !line.starts_with([' ', '\t', '#', '-']))
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_string(), unquote(value.trim())))
        .filter(|(_, value)| !value.is_empty())
        .collect())
}

/// The passwords `group_vars/all/secrets.yml` derives from the replication
/// password when the vault has none of its own: masked like it.
fn derived_secrets(replication_password: &str) -> Vec<Secret> {
    use sha2::{Digest, Sha256};
    ["superuser", "rewind", "restapi", "pgbackrest"]
        .iter()
        .map(|purpose| {
            let text = format!("pgcluster {purpose}:{replication_password}");
            Secret::new(hex::encode(Sha256::digest(text.as_bytes())))
        })
        .collect()
}

/// A YAML scalar without its quotes (double-quoted ones unescaped as JSON).
fn unquote(value: &str) -> String {
    if value.starts_with('"') {
        return serde_json::from_str(value).unwrap_or_else(|_| value.trim_matches('"').to_string());
    }
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.replace("''", "'");
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_runs_operate_yml_with_the_vault_and_its_inputs_as_json() {
        let mut vars = std::collections::HashMap::new();
        let here = env!("CARGO_MANIFEST_DIR");
        for key in ["TERRAFORM_DIR", "ANSIBLE_DIR", "TEMPLATE_DIR"] {
            vars.insert(key.to_string(), format!("{here}/templates"));
        }
        let config = Config::from_vars(vars).unwrap();
        let workspace = Workspace::new(std::path::Path::new("/data"), "default");
        let inputs =
            json!({"pgcluster_operation": "switchover", "pgcluster_candidate": "replica1"});
        let spec = operation_job(
            &config,
            &workspace,
            Secret::new("pw"),
            JobKind::ClusterSwitchover,
            "operate.yml",
            &inputs,
            json!({}),
        );
        let args: Vec<String> = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args[0].ends_with("/operate.yml"), "{args:?}");
        assert!(args.contains(&"--vault-password-file".to_string()));
        assert!(args.iter().any(|a| a.ends_with("/postgresql.yml")));
        assert_eq!(args.last().unwrap(), &inputs.to_string());
        assert_eq!(spec.kind, JobKind::ClusterSwitchover);
        assert!(spec.secret_input.is_some());
    }

    #[test]
    fn derived_passwords_are_those_of_the_playbook() {
        // `('pgcluster pgbackrest:' ~ 'pw') | hash('sha256')` in Ansible.
        let derived = derived_secrets("pw");
        assert_eq!(derived.len(), 4);
        assert_eq!(
            derived[3].expose(),
            "716ab0730f810e3b697cf6959436df557bfa91d61e634a0423fd6a2cdb83c4dc"
        );
    }

    #[test]
    fn yaml_scalars_are_unquoted() {
        assert_eq!(unquote(r#""a\"b""#), "a\"b");
        assert_eq!(unquote("'it''s'"), "it's");
        assert_eq!(unquote("plain"), "plain");
    }
}
