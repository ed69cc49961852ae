//! `run`: the playbook `site.yml` against the configured inventory, with the
//! vault password piped to it and the vault's values masked in its output.

use serde_json::Value;

use super::{Actor, App, Error};
use crate::domain::PostgresqlVersion;
use crate::runner::{JobHandle, JobSpec};
use crate::secret::Secret;
use crate::tools::ansible::{playbook_job, vault_secrets};
use crate::workspace::Workspace;

/// How a playbook run is asked for.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    pub version: PostgresqlVersion,
    /// Keep the playbook's standard output for the answer.
    pub capture_stdout: bool,
}

/// Starts the playbook on the workspace's inventory.
pub async fn run_playbook(
    app: &App,
    workspace: &Workspace,
    options: RunOptions,
    request: Value,
    actor: &Actor,
) -> Result<JobHandle, Error> {
    let mut spec = playbook_spec(app, workspace, options.version, request).await?;
    actor.stamp(&mut spec);
    spec.capture_stdout = options.capture_stdout;
    app.submit(spec).await
}

/// The job that runs `site.yml`, once the vault password, the inventory and
/// the vault file are there.
pub(crate) async fn playbook_spec(
    app: &App,
    workspace: &Workspace,
    version: PostgresqlVersion,
    request: Value,
) -> Result<JobSpec, Error> {
    let Some(password) = app.config.ansible_vault_password.clone() else {
        return Err(Error::invalid(
            "ANSIBLE_VAULT_PASSWORD is not set in the server's environment",
        ));
    };
    if !workspace.ansible_dir().join("hosts.ini").is_file() {
        return Err(Error::invalid(
            "there is no inventory yet: call /ansible/configure first",
        ));
    }
    if !app.config.ansible_vault_file.is_file() {
        return Err(Error::invalid(format!(
            "the vault file {} does not exist: create it with `ansible-vault create` (it holds replication_password)",
            app.config.ansible_vault_file.display()
        )));
    }
    let spec = playbook_job(&app.config, workspace, password.clone(), version, request);
    learn_vault_secrets(app, &password).await;
    Ok(spec)
}

/// Teaches the runner the vault's values (the replication password), so a
/// task that prints one has it masked. Re-read only when the file changed.
async fn learn_vault_secrets(app: &App, password: &Secret) {
    let modified = std::fs::metadata(&app.config.ansible_vault_file)
        .and_then(|m| m.modified())
        .ok();
    if modified.is_none() || *app.vault_learned.lock().unwrap() == modified {
        return;
    }
    match vault_secrets(&app.config, password).await {
        Ok(secrets) => {
            app.runner.add_secrets(secrets);
            *app.vault_learned.lock().unwrap() = modified;
        }
        // The playbook will report the same problem with the vault.
        Err(err) => {
            tracing::warn!(error = %app.runner.redact(&err), "could not read the vault's values to mask them")
        }
    }
}
