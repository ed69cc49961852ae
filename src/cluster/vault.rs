//! The vault file shared by every workspace: the replication password and
//! the backup repository's passphrase, encrypted by `ansible-vault` with
//! `ANSIBLE_VAULT_PASSWORD`, both through pipes.

use super::{Actor, App, Error};
use crate::secret::Secret;
use crate::store::{JobId, JobStatus};
use crate::tools::ansible::vault_encrypt_job;
use crate::workspace::DEFAULT;

/// What `set_vault` wrote.
#[derive(Debug)]
pub struct VaultSet {
    /// The `ansible-vault encrypt` job.
    pub job_id: JobId,
    /// The vault file written (`ANSIBLE_VAULT_FILE`).
    pub vault_file: std::path::PathBuf,
}

/// (Re)writes the vault file with this replication password and the backup
/// repository's passphrase (mode 0600, replaced atomically once
/// ansible-vault succeeded).
pub async fn set_vault(app: &App, password: &str, actor: &Actor) -> Result<VaultSet, Error> {
    let problem = if password.chars().count() < 12 {
        Some("must be at least 12 characters long")
    } else if password.len() > 1024 {
        Some("must be at most 1024 bytes long")
    } else if password.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    if let Some(reason) = problem {
        return Err(Error::field("replication_password", reason));
    }
    let Some(vault_password) = app.config.ansible_vault_password.clone() else {
        return Err(Error::invalid(
            "ANSIBLE_VAULT_PASSWORD is not set in the server's environment",
        ));
    };
    let secret = Secret::new(password);
    let cipher_pass = Secret::new(backup_passphrase(app, &vault_password).await?);
    // A JSON string is a valid YAML double-quoted scalar.
    let plaintext = Secret::new(format!(
        "replication_password: {}\npgbackrest_cipher_pass: {}\n",
        serde_json::to_string(password).map_err(Error::internal)?,
        serde_json::to_string(cipher_pass.expose()).map_err(Error::internal)?
    ));
    let vault_file = app.config.ansible_vault_file.clone();
    let dir = vault_file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    std::fs::create_dir_all(&dir).map_err(Error::internal)?;
    let tmp = dir.join(format!(".vault-{}.tmp", uuid::Uuid::new_v4()));
    let workspace = app.workspace(DEFAULT);
    let mut spec = vault_encrypt_job(
        &app.config,
        &workspace,
        vault_password,
        plaintext,
        &tmp,
        vec![secret.clone(), cipher_pass.clone()],
    );
    actor.stamp(&mut spec);
    let (target, written) = (vault_file.clone(), tmp.clone());
    spec.on_success = Some(Box::new(move |_| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&written, std::fs::Permissions::from_mode(0o600))
            .and_then(|_| std::fs::rename(&written, &target))
            .map_err(|e| format!("could not install the vault file: {e}"))?;
        Ok(None)
    }));
    spec.on_finish = Some(Box::new(move |_| {
        let _ = std::fs::remove_file(&tmp);
    }));
    let output = app.submit(spec).await?.wait().await;
    if output.status != JobStatus::Succeeded {
        return Err(Error::tool_failed("ansible-vault failed", &output));
    }
    app.runner.add_secrets([secret, cipher_pass]);
    Ok(VaultSet {
        job_id: output.job_id,
        vault_file,
    })
}

/// The backup repository's encryption passphrase: the one the vault holds
/// (a repository keeps the passphrase it was created with, whatever becomes
/// of the replication password), else 32 random bytes, hex.
async fn backup_passphrase(app: &App, vault_password: &Secret) -> Result<String, Error> {
    if app.config.ansible_vault_file.is_file()
        && let Ok(values) = crate::tools::ansible::vault_values(&app.config, vault_password).await
        && let Some((_, kept)) = values
            .into_iter()
            .find(|(key, value)| key == "pgbackrest_cipher_pass" && !value.is_empty())
    {
        return Ok(kept);
    }
    use rand::TryRng;
    let mut bytes = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(Error::internal)?;
    Ok(hex::encode(bytes))
}
