//! Spawning the application on port 0 with its own directories and fake (or
//! real) tools, and small helpers to look at what it did.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgcluster_api::config::Config;
use pgcluster_api::startup::Application;
use serde_json::Value;

pub const VAULT_PASSWORD: &str = "vault-pw-Zq8#x!must-never-leak";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Which binaries the app drives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tools {
    Fake,
    /// The real terraform (TERRAFORM_BINARY or `terraform` on PATH); fake ansible.
    RealTerraform,
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// Holds every directory of this app; removed on drop.
    pub root: tempfile::TempDir,
    /// Control files and call records of the fake tools.
    pub fake_dir: PathBuf,
    pub data_dir: PathBuf,
}

pub struct AppOptions {
    pub tools: Tools,
    pub vars: Vec<(&'static str, String)>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            tools: Tools::Fake,
            vars: Vec::new(),
        }
    }
}

/// The app with real terraform on `tests/fixtures/slow_stack`, whose apply
/// takes `delay` seconds.
pub async fn spawn_slow_stack_app(mut vars: Vec<(&'static str, String)>) -> TestApp {
    let stack = repo().join("tests/fixtures/slow_stack");
    vars.push(("TERRAFORM_DIR", stack.display().to_string()));
    spawn_app_with(AppOptions {
        tools: Tools::RealTerraform,
        vars,
    })
    .await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// A wrapper that points a fake at this app's control directory.
fn wrapper(root: &Path, fake_dir: &Path, tool: &str) -> PathBuf {
    let path = root.join(format!("bin-{tool}"));
    let script = format!(
        "#!/bin/sh\nexport FAKE_DIR='{}'\nexec '{}' \"$@\"\n",
        fake_dir.display(),
        repo().join("tests/fakes").join(tool).display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

pub fn real_terraform() -> String {
    std::env::var("TERRAFORM_BINARY").unwrap_or_else(|_| "terraform".into())
}

/// The configuration a test app runs with, as environment-style variables.
pub fn test_vars(root: &Path, tools: Tools) -> HashMap<String, String> {
    let fake_dir = root.join("fake");
    std::fs::create_dir_all(&fake_dir).unwrap();
    let ansible_dir = root.join("ansible");
    std::fs::create_dir_all(&ansible_dir).unwrap();
    let vault_file = root.join("vault.yml");
    std::fs::write(&vault_file, "$ANSIBLE_VAULT;1.1;AES256\n00\n").unwrap();
    let terraform = match tools {
        Tools::Fake => wrapper(root, &fake_dir, "terraform").display().to_string(),
        Tools::RealTerraform => real_terraform(),
    };
    let mut vars = HashMap::new();
    for (key, value) in [
        ("HOST_ADDRESS", "127.0.0.1".to_string()),
        ("API_PORT", "0".into()),
        ("TERRAFORM_BINARY", terraform),
        (
            "ANSIBLE_PLAYBOOK_BINARY",
            wrapper(root, &fake_dir, "ansible-playbook")
                .display()
                .to_string(),
        ),
        (
            "SSH_BINARY",
            wrapper(root, &fake_dir, "ssh").display().to_string(),
        ),
        // The cluster monitor only where a test turns it on.
        ("CLUSTER_MONITOR_SECONDS", "0".into()),
        (
            "TERRAFORM_DIR",
            repo().join("tests/fixtures/stack").display().to_string(),
        ),
        ("ANSIBLE_DIR", ansible_dir.display().to_string()),
        (
            "TEMPLATE_DIR",
            repo().join("templates").display().to_string(),
        ),
        ("DATA_DIR", root.join("data").display().to_string()),
        ("LOG_DIR", root.join("logs").display().to_string()),
        ("ANSIBLE_VAULT_FILE", vault_file.display().to_string()),
        ("ANSIBLE_VAULT_PASSWORD", VAULT_PASSWORD.into()),
        ("CANCEL_GRACE_SECS", "2".into()),
        // Not the default share of the disk: the suite runs on any free space.
        ("MIN_FREE_BYTES", "1048576".into()),
    ] {
        vars.insert(key.to_string(), value);
    }
    vars
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let root = tempfile::tempdir().unwrap();
    let mut vars = test_vars(root.path(), options.tools);
    for (key, value) in options.vars {
        vars.insert(key.to_string(), value);
    }
    let config = Config::from_vars(vars).expect("test configuration is valid");
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap(),
        fake_dir: root.path().join("fake"),
        data_dir: root.path().join("data"),
        root,
    }
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        answer(response).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        let response = self
            .client
            .put(format!("{}{path}", self.address))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        answer(response).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        let response = self
            .client
            .delete(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        answer(response).await
    }

    /// POST with no body at all, as `curl -X POST` sends.
    pub async fn post_empty(&self, path: &str) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        answer(response).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        answer(response).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        answer(response).await
    }

    /// A plain-text answer's body (`/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("a text body")
    }

    pub fn workspace(&self) -> PathBuf {
        self.data_dir.join("workspaces/default")
    }

    /// Turns a behaviour of the fake tools on (`fail`, `sleep`, `grandchild`, `outputs`).
    pub fn fake(&self, control: &str, content: &str) {
        std::fs::write(self.fake_dir.join(control), content).unwrap();
    }

    pub fn unfake(&self, control: &str) {
        let _ = std::fs::remove_file(self.fake_dir.join(control));
    }

    /// The recorded calls of the fake tools, oldest first.
    pub fn calls(&self) -> Vec<PathBuf> {
        let mut calls: Vec<PathBuf> = std::fs::read_dir(self.fake_dir.join("calls"))
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        calls.sort();
        calls
    }

    pub fn last_call(&self) -> PathBuf {
        self.calls().pop().expect("a fake tool was called")
    }

    /// Waits (up to 3 minutes) for a job to end and returns its record.
    pub async fn wait_for_job(&self, id: &str) -> Value {
        for _ in 0..1800 {
            let job = self.get(&format!("/jobs/{id}")).await.body;
            let status = job["status"].as_str().unwrap_or_default();
            if !matches!(status, "queued" | "running") {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {id} did not end");
    }

    /// Waits (up to 30 s) until the job's log holds `text`; whether it did.
    pub async fn wait_for_log(&self, id: &str, text: &str) -> bool {
        for _ in 0..300 {
            let log = self.get(&format!("/jobs/{id}/log")).await.body.to_string();
            if log.contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Generates a valid tfvars for the test stack.
    pub async fn generate(&self) -> Answer {
        let answer = self
            .post(
                "/terraform/generate",
                serde_json::json!({"bastion_key_pair": "bastion-key", "db_key_pair": "db-key"}),
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
    Answer {
        status,
        body,
        headers,
    }
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Every file under `dir` with its bytes, to compare before and after a request.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// `snapshot` of a data directory, plus the log lines its job store holds, as
/// text: a scan for a secret has to see them, and they are stored compressed
/// (a chunk is `z`, its length as a little-endian `u32` and an LZ4 block, or
/// its lines as they are). Decoded here, not by the store's own code.
pub fn snapshot_with_logs(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = snapshot(dir);
    let stores: Vec<PathBuf> = files
        .keys()
        .filter(|path| path.extension().is_some_and(|ext| ext == "db"))
        .cloned()
        .collect();
    for store in stores {
        let conn = rusqlite::Connection::open_with_flags(
            &store,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut chunks = conn.prepare("SELECT lines FROM job_log_chunks").unwrap();
        let mut text = Vec::new();
        for chunk in chunks
            .query_map([], |row| row.get::<_, Vec<u8>>(0))
            .unwrap()
        {
            let chunk = chunk.unwrap();
            match chunk.split_first() {
                Some((b'z', rest)) => {
                    let (len, block) = rest.split_at(4);
                    let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
                    text.extend(lz4_flex::block::decompress(block, len).unwrap());
                }
                _ => text.extend(chunk),
            }
        }
        files.insert(store.with_extension("db: log lines"), text);
    }
    files
}

/// A private key file (mode 0600) under the app's directory.
pub fn key_file(app: &TestApp, name: &str) -> String {
    let path = app.root.path().join(name);
    std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

/// Requests with `Authorization: Bearer <token>`.
impl TestApp {
    pub async fn get_as(&self, token: &str, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        answer(response).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        answer(response).await
    }
}

/// Any method, with a bearer token or none, with a JSON body or none.
impl TestApp {
    pub async fn send_as(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request sent")).await
    }
}

/// A second server on the first one's directories (its job store, its
/// workspaces), as a restarted server finds them; `vars` override.
pub async fn spawn_app_sharing(
    first: &TestApp,
    tools: Tools,
    vars: Vec<(&'static str, String)>,
) -> TestApp {
    let mut config_vars = test_vars(first.root.path(), tools);
    for (key, value) in vars {
        config_vars.insert(key.to_string(), value);
    }
    let config = Config::from_vars(config_vars).expect("test configuration is valid");
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: first.client.clone(),
        fake_dir: first.fake_dir.clone(),
        data_dir: first.data_dir.clone(),
        root: tempfile::tempdir().unwrap(),
    }
}
