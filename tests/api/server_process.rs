//! The server binary as an operator runs it: start-up checks and log files.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[test]
fn invalid_configuration_stops_start_up_naming_each_key() {
    let root = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pgcluster-api"))
        .current_dir(root.path())
        .env("API_PORT", "http")
        .env("DEBUG", "perhaps")
        .env("TERRAFORM_DIR", "/nonexistent/stack")
        .env("LOG_DIR", root.path().join("logs"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in ["API_PORT", "DEBUG", "TERRAFORM_DIR"] {
        assert!(stderr.contains(key), "{key} not named in {stderr}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with the fake tools: tool output lands in the tool logs,
/// tagged with the job id, and the vault password lands nowhere.
#[tokio::test]
async fn tool_output_is_logged_per_tool_with_job_ids_and_secrets_stay_out() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let vars = test_vars(root.path(), Tools::Fake);
    let fake_dir = root.path().join("fake");
    std::fs::write(
        fake_dir.join("outputs"),
        crate::ansible::OUTPUTS_TWO_REPLICAS,
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pgcluster-api"))
        .current_dir(root.path())
        .envs(vars)
        .env("API_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "server did not start");

    let init: serde_json::Value = client
        .post(format!("{base}/terraform/init"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let init_job = init["job_id"].as_str().unwrap().to_string();
    let key = |name: &str| {
        let path = root.path().join(name);
        std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        path
    };
    let configure = client
        .post(format!("{base}/ansible/configure"))
        .json(&json!({"bastion_key_path": key("b.pem"), "db_key_path": key("d.pem")}))
        .send()
        .await
        .unwrap();
    assert_eq!(configure.status(), 200);
    let run: serde_json::Value = client
        .post(format!("{base}/ansible/run"))
        .json(&json!({"output": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_job = run["job_id"].as_str().unwrap().to_string();

    // The child's environment and argv, as recorded by the fake.
    let mut calls: Vec<_> = std::fs::read_dir(fake_dir.join("calls"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    calls.sort();
    let ansible_call = calls.last().unwrap();
    assert_eq!(
        std::fs::read_to_string(ansible_call.join("vault_password"))
            .unwrap()
            .trim(),
        VAULT_PASSWORD
    );
    for file in ["argv", "env"] {
        let text = std::fs::read_to_string(ansible_call.join(file)).unwrap();
        assert!(
            !text.contains(VAULT_PASSWORD),
            "vault password in the child's {file}"
        );
        assert!(
            !text.contains("ANSIBLE_VAULT_PASSWORD"),
            "vault variable in the child's {file}"
        );
    }

    terminate(child.id());
    let output = child.wait_with_output().unwrap();
    let console = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);

    let logs = root.path().join("logs");
    let terraform_log = read_log(&logs, "terraform.log");
    assert!(
        terraform_log
            .lines()
            .any(|l| l.contains(&init_job) && l.contains("fake terraform init done")),
        "{terraform_log}"
    );
    let ansible_log = read_log(&logs, "ansible.log");
    assert!(
        ansible_log
            .lines()
            .any(|l| l.contains(&run_job) && l.contains("PLAY RECAP")),
        "{ansible_log}"
    );
    let app_log = read_log(&logs, "app.log");
    assert!(app_log.contains("job finished"), "{app_log}");
    for (name, text) in [
        ("terraform.log", &terraform_log),
        ("ansible.log", &ansible_log),
        ("app.log", &app_log),
        ("console", &console),
    ] {
        assert!(!text.contains(VAULT_PASSWORD), "vault password in {name}");
    }
    assert!(!run.to_string().contains(VAULT_PASSWORD));
}

/// SIGTERM, so the server shuts down and flushes its logs.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// The server binary running with a test configuration.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub base: String,
    pub client: reqwest::Client,
}

impl ServerProcess {
    pub async fn start(root: &std::path::Path, extra: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let mut vars = test_vars(root, Tools::Fake);
        for (key, value) in extra {
            vars.insert(key.to_string(), value.to_string());
        }
        let child = Command::new(env!("CARGO_BIN_EXE_pgcluster-api"))
            .current_dir(root)
            .envs(vars)
            .env("API_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = ServerProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        for _ in 0..100 {
            if server
                .client
                .get(format!("{}/health", server.base))
                .send()
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not start");
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn pid_of(call_dir: &std::path::Path) -> i32 {
    std::fs::read_to_string(call_dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The binary (1 s shutdown and cancel grace) running a plan whose tool
/// prints for two minutes: the server, the job id, the tool's pid.
async fn start_with_a_long_plan(root: &std::path::Path) -> (ServerProcess, String, i32) {
    let fake_dir = root.join("fake");
    let server = ServerProcess::start(
        root,
        &[("SHUTDOWN_GRACE_SECS", "1"), ("CANCEL_GRACE_SECS", "1")],
    )
    .await;
    std::fs::write(fake_dir.join("sleep"), "120").unwrap();
    let (status, started) = server.post("/terraform/plan", json!({"async": true})).await;
    assert_eq!(status, 202, "{started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    wait_until("the tool started", || {
        fake_dir.join("calls/000/pid").exists()
    })
    .await;
    let tool_pid = pid_of(&fake_dir.join("calls/000"));
    (server, id, tool_pid)
}

#[tokio::test]
async fn a_job_left_running_by_a_killed_server_is_interrupted_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let fake_dir = root.path().join("fake");
    let server = ServerProcess::start(root.path(), &[("CANCEL_GRACE_SECS", "1")]).await;
    std::fs::write(fake_dir.join("sleep"), "120").unwrap();
    let (status, started) = server.post("/terraform/plan", json!({"async": true})).await;
    assert_eq!(status, 202);
    let id = started["job_id"].as_str().unwrap().to_string();
    // Wait until the job has printed (and stored) a few lines.
    let mut logged = 0;
    for _ in 0..100 {
        logged = server.get(&format!("/jobs/{id}/log")).await["lines"]
            .as_array()
            .unwrap()
            .len();
        if logged >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged >= 3);
    let call = fake_dir.join("calls/000");
    let tool_pid = pid_of(&call);

    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL: no chance to clean up
    server.child.wait().unwrap();
    assert!(
        alive(tool_pid),
        "the tool outlives a killed server (own process group)"
    );

    let restarted = ServerProcess::start(root.path(), &[("CANCEL_GRACE_SECS", "1")]).await;
    let job = restarted.get(&format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "interrupted", "{job}");
    assert!(job["error"].as_str().unwrap().contains("server stopped"));
    let log = restarted.get(&format!("/jobs/{id}/log")).await;
    assert!(
        log["lines"].as_array().unwrap().len() >= logged,
        "log kept up to the last stored line"
    );
    // The orphaned tool was stopped, and the workspace lock is free again.
    wait_until("the orphaned tool is gone", || !alive(tool_pid)).await;
    std::fs::remove_file(fake_dir.join("sleep")).unwrap();
    let (status, body) = restarted.post("/terraform/plan", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let mut restarted = restarted;
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}

#[tokio::test]
async fn sigterm_lets_jobs_finish_within_the_grace_period_then_cancels_them() {
    let root = tempfile::tempdir().unwrap();
    let (server, id, tool_pid) = start_with_a_long_plan(root.path()).await;

    terminate(server.child.id());
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    assert!(!alive(tool_pid), "the job's processes were stopped");

    let restarted = ServerProcess::start(root.path(), &[]).await;
    let job = restarted.get(&format!("/jobs/{id}")).await;
    assert_eq!(
        job["status"], "cancelled",
        "recorded as cancelled, not interrupted: {job}"
    );
    let mut restarted = restarted;
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}

/// A log file and its rotated siblings (`app.log.2026-11-23`), concatenated.
pub fn read_log(dir: &std::path::Path, name: &str) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(name))
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {name} in {}", dir.display());
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

#[tokio::test]
async fn json_logs_carry_the_request_id_of_the_job_they_belong_to() {
    let root = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(root.path(), &[("LOG_FORMAT", "json")]).await;
    let response = server
        .client
        .post(format!("{}/terraform/init", server.base))
        .header("x-request-id", "ci-run-42.init")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "ci-run-42.init");
    let body: serde_json::Value = response.json().await.unwrap();
    let job = server
        .get(&format!("/jobs/{}", body["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(job["request_id"], "ci-run-42.init");
    terminate(server.child.id());
    let mut server = server;
    server.child.wait().unwrap();
    let app_log = read_log(&root.path().join("logs"), "app.log");
    let lines: Vec<serde_json::Value> = app_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "job started"
            && l["fields"]["request_id"] == "ci-run-42.init"),
        "{app_log}"
    );
}
