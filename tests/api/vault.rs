//! `/ansible/vault`: the replication password set through the API, encrypted
//! with the real ansible-vault (both secrets through pipes), and masked in
//! the output of later runs.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::json;

use crate::ansible::{OUTPUTS_TWO_REPLICAS, configure_body};
use crate::helpers::*;

const REPLICATION_PASSWORD: &str = "repl-Pw-9f3k\"quote'and\\slash";

fn real_vault() -> std::path::PathBuf {
    let playbook =
        std::env::var("ANSIBLE_PLAYBOOK_BINARY").unwrap_or_else(|_| "ansible-playbook".into());
    let path = std::path::Path::new(&playbook);
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("ansible-vault"),
        _ => "ansible-vault".into(),
    }
}

/// An app whose ansible-vault is the real one (next to the fake playbook).
async fn app_with_real_vault() -> TestApp {
    let app = spawn_app().await;
    let vault = real_vault();
    let vault = if vault.is_absolute() {
        vault
    } else {
        String::from_utf8(Command::new("which").arg(&vault).output().unwrap().stdout)
            .unwrap()
            .trim()
            .into()
    };
    std::os::unix::fs::symlink(vault, app.root.path().join("ansible-vault")).unwrap();
    std::fs::remove_file(app.root.path().join("vault.yml")).unwrap();
    app
}

fn decrypt(app: &TestApp) -> String {
    use std::io::Write;
    let mut child = Command::new(app.root.path().join("ansible-vault"))
        .args(["view", "--vault-password-file", "/dev/stdin"])
        .arg(app.root.path().join("vault.yml"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .env("ANSIBLE_HOME", app.root.path().join("ansible-home"))
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(VAULT_PASSWORD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_vault_is_written_encrypted_and_holds_the_password() {
    let app = app_with_real_vault().await;
    let answer = app
        .post(
            "/ansible/vault",
            json!({"replication_password": REPLICATION_PASSWORD}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let path = app.root.path().join("vault.yml");
    let content = std::fs::read_to_string(&path).unwrap();
    assert!(content.starts_with("$ANSIBLE_VAULT;"), "{content}");
    assert!(!content.contains("repl-Pw"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let plain = decrypt(&app);
    let value = |plain: &str, key: &str| -> String {
        let line = plain
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{key} in the vault"));
        serde_json::from_str::<String>(line).unwrap()
    };
    assert_eq!(value(&plain, "replication_password"), REPLICATION_PASSWORD);
    // The backup repository's passphrase: random, then kept whatever becomes
    // of the replication password (the repository is encrypted with it).
    let cipher = value(&plain, "pgbackrest_cipher_pass");
    assert_eq!(cipher.len(), 64, "{cipher}");
    assert!(cipher.chars().all(|c| c.is_ascii_hexdigit()), "{cipher}");
    let again = app
        .post(
            "/ansible/vault",
            json!({"replication_password": "another-Repl-Pw-42"}),
        )
        .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let plain = decrypt(&app);
    assert_eq!(value(&plain, "replication_password"), "another-Repl-Pw-42");
    assert_eq!(value(&plain, "pgbackrest_cipher_pass"), cipher);
    // Nothing else holds it: not the job's log, not the data directory.
    let id = answer.body["job_id"].as_str().unwrap();
    let log = app.get(&format!("/jobs/{id}/log")).await.body.to_string();
    let job = app.get(&format!("/jobs/{id}")).await.body.to_string();
    assert!(
        !log.contains("repl-Pw") && !job.contains("repl-Pw") && !log.contains(&cipher),
        "{log} {job}"
    );
    for (file, bytes) in snapshot_with_logs(&app.data_dir) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("repl-Pw") && !text.contains(VAULT_PASSWORD) && !text.contains(&cipher),
            "{}",
            file.display()
        );
    }
    // No temporary plaintext or ciphertext left next to it.
    let leftovers: Vec<_> = std::fs::read_dir(app.root.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_run_masks_the_replication_password_read_from_the_vault() {
    let app = app_with_real_vault().await;
    assert_eq!(
        app.post(
            "/ansible/vault",
            json!({"replication_password": REPLICATION_PASSWORD})
        )
        .await
        .status,
        200
    );
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    assert_eq!(
        app.post("/ansible/configure", configure_body(&app))
            .await
            .status,
        200
    );
    // The backup repository's passphrase, derived from it by the playbook.
    let derived = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            format!("pgcluster pgbackrest:{REPLICATION_PASSWORD}").as_bytes(),
        ))
    };
    app.fake(
        "print",
        &format!("careless task: {REPLICATION_PASSWORD} repo1-cipher-pass={derived}"),
    );
    let answer = app.post("/ansible/run", json!({"output": true})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let output = answer.body["output"].as_str().unwrap();
    assert!(output.contains("careless task: ********"), "{output}");
    assert!(output.contains("repo1-cipher-pass=********"), "{output}");
    let id = answer.body["job_id"].as_str().unwrap();
    let log = app.get(&format!("/jobs/{id}/log")).await.body.to_string();
    assert!(log.contains("careless task: ********"), "{log}");
    assert!(!log.contains("repl-Pw"));
    assert!(!log.contains(&derived), "{log}");
}

#[tokio::test]
async fn a_weak_or_malformed_replication_password_is_refused() {
    let app = app_with_real_vault().await;
    for body in [
        json!({"replication_password": "short"}),
        json!({"replication_password": "long enough but\nnewline"}),
        json!({"replication_password": 12345678901234_u64}),
        json!({"replication_password": "long enough password", "extra": 1}),
    ] {
        let answer = app.post("/ansible/vault", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
    }
    assert!(!app.root.path().join("vault.yml").exists());
}
