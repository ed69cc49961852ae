//! `/ansible/configure` and `/ansible/run` with the fake tools.

use serde_json::{Value, json};

use crate::helpers::*;

pub const OUTPUTS_TWO_REPLICAS: &str = r#"{
  "bastion_eip_address": {"sensitive": false, "type": "string", "value": "203.0.113.10"},
  "primary_db_addr": {"sensitive": false, "type": "string", "value": "10.0.1.10"},
  "replica_db_addresses": {"sensitive": false, "type": ["list", "string"], "value": ["10.0.2.11", "10.0.3.12"]},
  "ssh_user": {"sensitive": false, "type": "string", "value": "ubuntu"},
  "ansible_vars": {"sensitive": false, "type": ["map", "string"], "value": {"postgresql_client_cidr": "10.0.0.0/16"}}
}"#;

pub async fn configured_app() -> TestApp {
    let app = spawn_app().await;
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    let body = configure_body(&app);
    let answer = app.post("/ansible/configure", body).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    app
}

pub fn configure_body(app: &TestApp) -> Value {
    json!({
        "bastion_key_path": key_file(app, "bastion.pem"),
        "db_key_path": key_file(app, "db.pem"),
        "max_connections": "50",
        "max_wal_senders": 15,
    })
}

#[tokio::test]
async fn configure_writes_inventory_ssh_config_ansible_cfg_and_settings() {
    let app = configured_app().await;
    let dir = app.workspace().join("ansible");
    let hosts = std::fs::read_to_string(dir.join("hosts.ini")).unwrap();
    assert!(
        hosts.contains("bastion1 ansible_host=203.0.113.10\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains("primary1 ansible_host=10.0.1.10\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains("replica1 ansible_host=10.0.2.11\nreplica2 ansible_host=10.0.3.12\n"),
        "{hosts}"
    );
    assert!(hosts.contains("ansible_user=ubuntu"), "{hosts}");
    let ssh = std::fs::read_to_string(dir.join("ssh_config")).unwrap();
    assert!(ssh.contains("ProxyJump bastion"), "{ssh}");
    assert!(
        ssh.contains(&format!(
            "IdentityFile {}",
            app.root.path().join("db.pem").display()
        )),
        "{ssh}"
    );
    let cfg = std::fs::read_to_string(dir.join("ansible.cfg")).unwrap();
    assert!(
        cfg.contains(&format!("ssh_args = -F {}/ssh_config", dir.display())),
        "{cfg}"
    );
    let vars = std::fs::read_to_string(dir.join("postgresql.yml")).unwrap();
    assert!(
        vars.contains("  \"max_connections\": !unsafe \"50\"\n"),
        "{vars}"
    );
    assert!(
        vars.contains("  \"max_wal_senders\": !unsafe \"15\"\n"),
        "{vars}"
    );
    assert!(
        vars.contains("postgresql_client_cidr: !unsafe \"10.0.0.0/16\"\n"),
        "{vars}"
    );
}

#[tokio::test]
async fn configure_answers_with_the_inventory_it_built() {
    let app = spawn_app().await;
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    let answer = app.post("/ansible/configure", configure_body(&app)).await;
    assert_eq!(
        answer.body["message"],
        "Ansible configuration completed successfully"
    );
    assert_eq!(
        answer.body["inventory"]["replicas"],
        json!(["10.0.2.11", "10.0.3.12"])
    );
    assert!(answer.body["job_id"].is_string());
}

#[tokio::test]
async fn configure_works_with_no_replicas() {
    let app = spawn_app().await;
    app.fake(
        "outputs",
        r#"{"bastion_eip_address": {"value": "203.0.113.10"}, "primary_db_addr": {"value": "10.0.1.10"},
            "replica_db_addresses": {"value": []}}"#,
    );
    let answer = app.post("/ansible/configure", configure_body(&app)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let hosts = std::fs::read_to_string(app.workspace().join("ansible/hosts.ini")).unwrap();
    assert!(hosts.contains("[replicas]\n\n[db:children]"), "{hosts}");
}

#[tokio::test]
async fn configure_before_apply_is_a_400_naming_the_missing_output() {
    let app = spawn_app().await;
    let answer = app.post("/ansible/configure", configure_body(&app)).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("bastion_eip_address")
    );
    assert!(!app.workspace().join("ansible/hosts.ini").exists());
}

#[tokio::test]
async fn configure_rejects_an_output_address_carrying_inventory_syntax() {
    let app = spawn_app().await;
    app.fake(
        "outputs",
        r#"{"bastion_eip_address": {"value": "1.2.3.4 ansible_connection=local"},
            "primary_db_addr": {"value": "10.0.1.10"}, "replica_db_addresses": {"value": []}}"#,
    );
    let answer = app.post("/ansible/configure", configure_body(&app)).await;
    assert_eq!(answer.status, 400);
    assert!(!app.workspace().join("ansible/hosts.ini").exists());
}

#[tokio::test]
async fn key_paths_must_exist_be_regular_files_and_private() {
    let app = spawn_app().await;
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    let open_key = app.root.path().join("open.pem");
    std::fs::write(&open_key, "key").unwrap();
    let answer = app
        .post(
            "/ansible/configure",
            json!({"bastion_key_path": open_key, "db_key_path": "/nonexistent/db.pem"}),
        )
        .await;
    assert_eq!(answer.status, 400);
    let fields = &answer.body["fields"];
    assert!(
        fields["bastion_key_path"]
            .as_str()
            .unwrap()
            .contains("chmod 600"),
        "{fields}"
    );
    assert!(
        fields["db_key_path"]
            .as_str()
            .unwrap()
            .contains("cannot be opened"),
        "{fields}"
    );
    let missing = app
        .post("/ansible/configure", json!({"max_connections": 5}))
        .await;
    assert_eq!(missing.body["fields"]["bastion_key_path"], "is required");
}

#[tokio::test]
async fn run_pipes_the_vault_password_and_never_puts_it_in_argv_env_or_files() {
    let app = configured_app().await;
    let answer = app
        .post(
            "/ansible/run",
            json!({"output": true, "postgresql_version": 15}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer.body["message"],
        "Ansible playbook executed successfully"
    );
    assert!(
        answer.body["output"]
            .as_str()
            .unwrap()
            .contains("PLAY RECAP")
    );

    let call = app.last_call();
    // The child read the password from the pipe...
    assert_eq!(
        std::fs::read_to_string(call.join("vault_password"))
            .unwrap()
            .trim(),
        VAULT_PASSWORD
    );
    assert_eq!(
        std::fs::read_to_string(call.join("vault_file_arg"))
            .unwrap()
            .trim(),
        "/dev/fd/3"
    );
    let fds = std::fs::read_to_string(call.join("fds")).unwrap();
    assert!(fds.contains(" 3 -> pipe:"), "fd 3 is a pipe: {fds}");
    // ...and from nowhere else: argv, environment, any file the server wrote.
    let argv = std::fs::read_to_string(call.join("argv")).unwrap();
    assert!(!argv.contains(VAULT_PASSWORD));
    assert!(argv.contains("{\"postgresql_version\":15}"), "{argv}");
    let env = std::fs::read_to_string(call.join("env")).unwrap();
    assert!(!env.contains(VAULT_PASSWORD));
    assert!(!env.contains("ANSIBLE_VAULT_PASSWORD"));
    for (path, bytes) in snapshot_with_logs(&app.data_dir) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(VAULT_PASSWORD),
            "{} holds the vault password",
            path.display()
        );
    }
    assert!(!answer.body.to_string().contains(VAULT_PASSWORD));
}

#[tokio::test]
async fn run_passes_the_inventory_settings_and_vault_as_files() {
    let app = configured_app().await;
    assert_eq!(app.post_empty("/ansible/run").await.status, 200);
    let argv = read_lines(&app.last_call().join("argv"));
    let dir = app.workspace().join("ansible");
    assert!(argv[0].ends_with("/site.yml"), "{argv:?}");
    assert!(
        argv.windows(2)
            .any(|w| w[0] == "-i" && w[1] == dir.join("hosts.ini").to_str().unwrap())
    );
    assert!(argv.contains(&format!("@{}", dir.join("postgresql.yml").display())));
    assert!(
        argv.contains(&"{\"postgresql_version\":16}".to_string()),
        "default version: {argv:?}"
    );
    let env = std::fs::read_to_string(app.last_call().join("env")).unwrap();
    assert!(env.contains(&format!(
        "ANSIBLE_CONFIG={}",
        dir.join("ansible.cfg").display()
    )));
}

#[tokio::test]
async fn a_failed_run_reports_the_task_failure_from_stdout() {
    let app = configured_app().await;
    app.fake("fail", "");
    let answer = app.post_empty("/ansible/run").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "Ansible playbook execution failed");
    let details = answer.body["details"].as_str().unwrap();
    assert!(details.contains("fake task failure on stdout"), "{details}");
    assert!(details.contains("fake ansible warning"), "{details}");
}

#[tokio::test]
async fn run_without_a_vault_password_is_a_400_and_runs_nothing() {
    let app = spawn_app_with(AppOptions {
        vars: vec![("ANSIBLE_VAULT_PASSWORD", String::new())],
        ..AppOptions::default()
    })
    .await;
    let answer = app.post_empty("/ansible/run").await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("ANSIBLE_VAULT_PASSWORD")
    );
    assert!(app.calls().is_empty());
}

#[tokio::test]
async fn run_before_configure_is_a_400_saying_what_to_call() {
    let app = spawn_app().await;
    let answer = app.post_empty("/ansible/run").await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("/ansible/configure")
    );
}

#[tokio::test]
async fn postgresql_version_must_be_an_integer_major_version() {
    let app = configured_app().await;
    for bad in [
        json!("16; rm -rf /"),
        json!("\"; rm -rf /"),
        json!(16.1),
        json!(99),
        json!([16]),
    ] {
        let answer = app
            .post("/ansible/run", json!({"postgresql_version": bad}))
            .await;
        assert_eq!(answer.status, 400, "{bad}");
        assert!(
            answer.body["fields"]["postgresql_version"].is_string(),
            "{:?}",
            answer.body
        );
    }
    // Only the configure-time terraform output ran.
    assert_eq!(app.calls().len(), 1);
}
