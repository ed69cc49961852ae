//! The benchmark behind `scripts/bench.sh`: starts the release server binary
//! with fake (or real) tools in a temporary directory, and measures each
//! figure next to a baseline taken in the same run, because the machine is
//! shared and absolute numbers drift. Writes `bench/results/latest.{md,json}`.
//!
//! Expects in the environment (bench.sh sets them): `BENCH_TERRAFORM` and
//! `BENCH_ANSIBLE_PLAYBOOK` (the real tools), `wrk` on PATH.
//!
//! `BENCH_SERVER`, when set, is the server binary to run instead of this
//! tree's release build (to compare two builds under the same conditions).
//! `BENCH_WRK_PAUSE_MS` is the pause of each wrk connection after an answer
//! in the paced pass of the load figure (default 1 ms; the other pass does not
//! pause).
//!
//! `BENCH_LOAD_ROUNDS` sets the rounds of the load figures (default 5) and
//! `BENCH_MEMORY_SIZES` which runs the memory figure makes (`100MiB,1GiB`,
//! the default, or one of them): fewer for a quick comparison of two builds.
//!
//! Arguments name the sections to run (`overhead realistic load memory
//! latency startup scaling`); with some named, only those run and their raw
//! figures are printed on standard output, leaving the recorded results
//! alone. The load figures of both profiles are also printed side by side
//! (standard error) whenever either ran.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const VAULT_PASSWORD: &str = "bench-vault-password";
/// The background jobs of the load figures: how many, and what they print.
const LOAD_JOBS: usize = 4;
const MIB: u64 = 1024 * 1024;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result<()> {
    let bench = Bench::from_env()?;
    let only: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let mut raw = serde_json::Map::new();
    raw.insert("machine".into(), bench.machine());

    let sections: [(&str, &str); 7] = [
        ("overhead", "1. wrapper overhead (real terraform plan)"),
        (
            "realistic",
            "2a. API under a realistic load (wrk, 4 jobs x 1 MB/s)",
        ),
        (
            "load",
            "2b. API under a heavy load, degradation check (wrk, 4 jobs x 10 MB/s)",
        ),
        ("memory", "3. memory, one big job + 100 SSE followers"),
        ("latency", "4. live log latency"),
        ("startup", "5. start-up"),
        ("scaling", "6. concurrent jobs"),
    ];
    if let Some(unknown) = only
        .iter()
        .find(|name| !sections.iter().any(|(key, _)| key == name))
    {
        let known: Vec<&str> = sections.iter().map(|(key, _)| *key).collect();
        return Err(format!("no section {unknown}: one of {}", known.join(", ")).into());
    }
    for (key, title) in sections {
        if !only.is_empty() && !only.iter().any(|name| name == key) {
            continue;
        }
        eprintln!("bench: {title}");
        let t = Instant::now();
        let value = match key {
            "overhead" => overhead(&bench).await,
            "realistic" => load(&bench, &REALISTIC).await,
            "load" => load(&bench, &DEGRADED).await,
            "memory" => memory(&bench).await,
            "latency" => latency(&bench).await,
            "startup" => startup(&bench).await,
            _ => scaling(&bench).await,
        };
        let value = value.unwrap_or_else(|e| json!({ "error": e.to_string() }));
        eprintln!(
            "bench: {key} took {:.1}s: {value}",
            t.elapsed().as_secs_f64()
        );
        raw.insert(key.into(), value);
    }
    raw.insert(
        "total_seconds".into(),
        json!(round(started.elapsed().as_secs_f64(), 1)),
    );
    let raw = Value::Object(raw);
    // The two load profiles side by side, whichever ran.
    if let Some(table) = load_table(&raw) {
        eprintln!("\n{table}");
    }
    if !only.is_empty() {
        println!("{}", serde_json::to_string_pretty(&raw)?);
        return Ok(());
    }
    std::fs::create_dir_all(&bench.out_dir)?;
    std::fs::write(
        bench.out_dir.join("latest.json"),
        serde_json::to_string_pretty(&raw)? + "\n",
    )?;
    std::fs::write(bench.out_dir.join("latest.md"), report(&raw))?;
    eprintln!("bench: wrote {}", bench.out_dir.join("latest.md").display());
    Ok(())
}

struct Bench {
    repo: PathBuf,
    server_bin: PathBuf,
    terraform: PathBuf,
    ansible: PathBuf,
    out_dir: PathBuf,
}

impl Bench {
    fn from_env() -> Result<Bench> {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let var = |key: &str| std::env::var(key).map_err(|_| format!("{key} is not set"));
        Ok(Bench {
            server_bin: std::env::var_os("BENCH_SERVER")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo.join("target/release/pgcluster-api")),
            terraform: var("BENCH_TERRAFORM")?.into(),
            ansible: var("BENCH_ANSIBLE_PLAYBOOK")?.into(),
            out_dir: repo.join("bench/results"),
            repo,
        })
    }

    fn machine(&self) -> Value {
        let first_line = |program: &Path, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .unwrap_or_else(|e| format!("unavailable: {e}"))
        };
        let git = |args: &[&str]| first_line(Path::new("git"), args);
        json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1)).unwrap_or("").trim(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "terraform": first_line(&self.terraform, &["version"]),
            "ansible": first_line(&self.ansible, &["--version"]),
            "wrk": first_line(Path::new("sh"), &["-c", "wrk -v 2>&1"]),
            "git_commit": git(&["rev-parse", "HEAD"]),
            "git_dirty": !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty(),
            "date_utc": first_line(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        })
    }
}

/// Which terraform the server drives.
#[derive(Clone, Copy, PartialEq)]
enum Tools {
    /// bench/fakes/terraform-stream and tests/fakes/ansible-playbook.
    Fake,
    /// The real terraform and ansible-playbook.
    Real,
}

/// The server binary running in its own temporary directory.
struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
    root: tempfile::TempDir,
}

impl Server {
    fn fake_dir(&self) -> PathBuf {
        self.root.path().join("fake")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the fake's control files with these.
    fn fake(&self, controls: &[(&str, String)]) {
        let dir = self.fake_dir();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        for (name, value) in controls {
            std::fs::write(dir.join(name), value).unwrap();
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn start_async(&self, path: &str) -> Result<String> {
        let (status, body) = self.post(path, json!({"async": true})).await?;
        if status != 202 {
            return Err(format!("{path} answered {status}: {body}").into());
        }
        Ok(body["job_id"].as_str().unwrap_or_default().to_string())
    }

    async fn wait_job(&self, id: &str) -> Result<Value> {
        loop {
            let job = self.get(&format!("/jobs/{id}")).await?;
            if !matches!(job["status"].as_str(), Some("queued" | "running")) {
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after 15 s.
    fn stop(mut self) {
        signal(self.child.id(), "TERM", false);
        for _ in 0..150 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process, or to its process group.
fn signal(pid: u32, name: &str, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .arg(target)
        .status();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A script that points a fake at `fake_dir`, as tests/api/helpers.rs does.
fn wrapper(root: &Path, name: &str, fake_dir: &Path, target: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(name);
    let script = format!(
        "#!/bin/sh\nexport FAKE_DIR='{}'\nexec '{}' \"$@\"\n",
        fake_dir.display(),
        target.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

impl Bench {
    /// A temporary directory with everything a server needs, and its variables.
    fn server_env(&self, tools: Tools) -> (tempfile::TempDir, Vec<(String, String)>) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let fake_dir = dir.join("fake");
        std::fs::create_dir_all(&fake_dir).unwrap();
        std::fs::create_dir_all(dir.join("ansible")).unwrap();
        std::fs::write(dir.join("vault.yml"), "$ANSIBLE_VAULT;1.1;AES256\n00\n").unwrap();
        let (terraform, ansible) = match tools {
            Tools::Fake => (
                wrapper(
                    dir,
                    "bin-terraform",
                    &fake_dir,
                    &self.repo.join("bench/fakes/terraform-stream"),
                ),
                wrapper(
                    dir,
                    "bin-ansible-playbook",
                    &fake_dir,
                    &self.repo.join("tests/fakes/ansible-playbook"),
                ),
            ),
            Tools::Real => (self.terraform.clone(), self.ansible.clone()),
        };
        let path = |p: &Path| p.display().to_string();
        let vars = vec![
            ("HOST_ADDRESS", "127.0.0.1".to_string()),
            ("API_PORT", free_port().to_string()),
            ("TERRAFORM_BINARY", path(&terraform)),
            ("ANSIBLE_PLAYBOOK_BINARY", path(&ansible)),
            (
                "TERRAFORM_DIR",
                path(&self.repo.join("tests/fixtures/stack")),
            ),
            ("ANSIBLE_DIR", path(&dir.join("ansible"))),
            ("TEMPLATE_DIR", path(&self.repo.join("templates"))),
            ("DATA_DIR", path(&dir.join("data"))),
            ("LOG_DIR", path(&dir.join("logs"))),
            ("ANSIBLE_VAULT_FILE", path(&dir.join("vault.yml"))),
            ("ANSIBLE_VAULT_PASSWORD", VAULT_PASSWORD.to_string()),
            ("CANCEL_GRACE_SECS", "2".to_string()),
        ];
        let vars = vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        (root, vars)
    }

    fn spawn_server(&self, root: &Path, vars: &[(String, String)]) -> Result<Child> {
        Ok(Command::new(&self.server_bin)
            .current_dir(root)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    async fn server(&self, tools: Tools) -> Result<Server> {
        self.server_with(tools, &[]).await
    }

    async fn server_with(&self, tools: Tools, extra: &[(&str, &str)]) -> Result<Server> {
        let (root, mut vars) = self.server_env(tools);
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let port = &vars.iter().find(|(k, _)| k == "API_PORT").unwrap().1;
        let child = self.spawn_server(root.path(), &vars)?;
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            root,
        };
        for _ in 0..400 {
            if server
                .client
                .get(format!("{}/health", server.base))
                .send()
                .await
                .is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        server.stop();
        Err("the server did not start".into())
    }
}

// ---------------------------------------------------------------- statistics

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples a process's VmRSS every 10 ms until stopped; returns the peak in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        RssSampler { stop, peak, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------- SSE client

/// What one follower of `/jobs/{id}/events` saw.
#[derive(Default)]
struct Followed {
    lines: u64,
    ended: bool,
    /// For `stamp <ns>` lines: arrival minus stamp, in ms.
    latencies_ms: Vec<f64>,
}

/// Follows a job's events to its `end` event. With `stamps`, parses each line
/// event and records the latency of `stamp <ns>` lines.
async fn follow(client: reqwest::Client, url: String, stamps: bool) -> Result<Followed> {
    let mut response = client.get(url).send().await?;
    if response.status() != 200 {
        return Err(format!("events answered {}", response.status()).into());
    }
    let mut seen = Followed::default();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut scanned = 0;
    while let Some(chunk) = response.chunk().await? {
        let arrived = now_ns();
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        // Events end with a blank line.
        while let Some(i) = buf[scanned.max(start)..]
            .windows(2)
            .position(|w| w == b"\n\n")
        {
            let end = scanned.max(start) + i;
            let event = &buf[start..end];
            start = end + 2;
            scanned = start;
            if event.starts_with(b"event: end") || event.windows(11).any(|w| w == b"\nevent: end") {
                seen.ended = true;
                return Ok(seen);
            }
            if !(event.starts_with(b"event: line")
                || event.windows(12).any(|w| w == b"\nevent: line"))
            {
                continue;
            }
            seen.lines += 1;
            if stamps {
                let text = String::from_utf8_lossy(event);
                if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: "))
                    && let Ok(line) = serde_json::from_str::<Value>(data)
                    && let Some(stamp) = line["text"]
                        .as_str()
                        .and_then(|t| t.strip_prefix("stamp "))
                        .and_then(|t| t.parse::<u64>().ok())
                {
                    seen.latencies_ms
                        .push(arrived.saturating_sub(stamp) as f64 / 1e6);
                }
            }
        }
        buf.drain(..start);
        scanned = buf.len().saturating_sub(1);
    }
    Ok(seen)
}

// ---------------------------------------------------------------- 1. overhead

/// POST /terraform/plan (sync) against the same `terraform plan` run directly
/// in the same workspace, alternating, real terraform.
async fn overhead(bench: &Bench) -> Result<Value> {
    let server = bench.server(Tools::Real).await?;
    let result = overhead_with(bench, &server).await;
    server.stop();
    result
}

async fn overhead_with(bench: &Bench, server: &Server) -> Result<Value> {
    let (status, body) = server
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "bench", "db_key_pair": "bench"}),
        )
        .await?;
    if status != 200 {
        return Err(format!("generate answered {status}: {body}").into());
    }
    let (status, body) = server.post("/terraform/init", json!({})).await?;
    if status != 200 {
        return Err(format!("init answered {status}: {body}").into());
    }
    let cwd = server.root.path().join("data/workspaces/default/terraform");
    let plan_out = server.root.path().join("direct.tfplan");
    let api = || async {
        let t = Instant::now();
        let (status, body) = server.post("/terraform/plan", json!({})).await?;
        if status != 200 {
            return Err(format!("plan answered {status}: {body}").into());
        }
        Ok::<f64, Box<dyn std::error::Error + Send + Sync>>(ms(t.elapsed()))
    };
    let direct = || async {
        let t = Instant::now();
        let out = tokio::process::Command::new(&bench.terraform)
            .args(["plan", "-input=false", "-no-color", "-detailed-exitcode"])
            .arg(format!("-out={}", plan_out.display()))
            .current_dir(&cwd)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null())
            .output()
            .await?;
        if !matches!(out.status.code(), Some(0 | 2)) {
            return Err(format!("direct plan: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok::<f64, Box<dyn std::error::Error + Send + Sync>>(ms(t.elapsed()))
    };
    // Warm the page cache and the provider-free plugin discovery.
    for _ in 0..2 {
        api().await?;
        direct().await?;
    }
    // The plan itself varies by more than the server adds: many pairs.
    let pairs = 48;
    let (mut apis, mut directs, mut ratios, mut added) = (vec![], vec![], vec![], vec![]);
    for i in 0..pairs {
        let (a, d) = if i % 2 == 0 {
            let a = api().await?;
            (a, direct().await?)
        } else {
            let d = direct().await?;
            (api().await?, d)
        };
        apis.push(a);
        directs.push(d);
        ratios.push(a / d);
        added.push(a - d);
    }
    Ok(json!({
        "pairs": pairs,
        "api_ms": apis.iter().map(|v| round(*v, 2)).collect::<Vec<_>>(),
        "direct_ms": directs.iter().map(|v| round(*v, 2)).collect::<Vec<_>>(),
        "api_median_ms": round(median(&apis), 2),
        "direct_median_ms": round(median(&directs), 2),
        "median_ratio": round(median(&ratios), 3),
        "median_added_ms": round(median(&added), 2),
        "p90_added_ms": round(percentile(&added, 90.0), 2),
    }))
}

// ---------------------------------------------------------------- 2. load

struct Endpoint {
    name: &'static str,
    path: String,
    body: Option<&'static str>,
    connections: u32,
}

const GENERATE_BODY: &str = r#"{"bastion_key_pair": "bench-bastion", "db_key_pair": "bench-db", "replica_count": "2", "environment": "bench"}"#;
/// How long each background job would print, at most (it is told to stop
/// sooner).
const LOAD_JOB_SECONDS: u64 = 600;

/// A kind of background output for the load figures.
struct Profile {
    /// Bytes per second each of the `LOAD_JOBS` jobs prints (100-byte lines
    /// shaped like a `TF_LOG=trace` plan, never catching up after a pause).
    rate: u64,
    /// The server's configuration for it, on top of the defaults.
    env: &'static [(&'static str, &'static str)],
    /// The p99 loaded / idle ratio each pass should stay within, if any.
    target_p99_ratio: Option<f64>,
}

/// What a provisioning run prints when traced: 4 jobs at 1 MB/s each. The
/// target holds here.
const REALISTIC: Profile = Profile {
    rate: 1_000_000,
    env: &[],
    target_p99_ratio: Some(1.5),
};

/// Ten times that, a degradation check with no latency target: every line
/// printed must be stored, and the memory stay bounded. Storing goes on
/// through every window: the default JOB_LOG_MAX_BYTES would stop it after
/// about 6 s of a job's 10 MB/s.
const DEGRADED: Profile = Profile {
    rate: 10_000_000,
    env: &[("JOB_LOG_MAX_BYTES", "268435456")],
    target_p99_ratio: None,
};

/// Each wrk connection's pause after an answer in the paced pass, in ms
/// (`BENCH_WRK_PAUSE_MS`, default 1): a load the server can answer without
/// a queue, where the saturating pass (no pause) measures how it shares the
/// CPU once requests queue.
fn paced_pause_ms() -> u64 {
    std::env::var("BENCH_WRK_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

async fn wrk(
    bench: &Bench,
    server: &Server,
    endpoint: &Endpoint,
    seconds: u64,
    pause_ms: u64,
) -> Result<Value> {
    let script = bench.repo.join("bench/wrk/report.lua");
    let cpu_before = CpuSnapshot::take(server.pid());
    let out = tokio::process::Command::new("wrk")
        .args(["-t1", &format!("-c{}", endpoint.connections)])
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "10s", "-s"])
        .arg(&script)
        .arg(format!("{}{}", server.base, endpoint.path))
        .env("WRK_BODY", endpoint.body.unwrap_or(""))
        .env("WRK_DELAY_MS", pause_ms.to_string())
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| {
            format!(
                "wrk printed no figures: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let mut figures: Value = serde_json::from_str(line)?;
    let requests = figures["requests"].as_f64().unwrap_or(0.0);
    let seconds = figures["duration_us"].as_f64().unwrap_or(1.0) / 1e6;
    figures["rps"] = json!(round(requests / seconds, 1));
    figures["cpu"] = CpuSnapshot::take(server.pid()).since(&cpu_before, requests);
    Ok(figures)
}

/// What the CPUs did over a time: the machine's busy and idle time on all
/// cores (`/proc/stat`) and, for each of the server's threads, the CPU time it
/// ran and the time it was runnable but waited for a core
/// (`/proc/<pid>/task/<tid>/schedstat`).
struct CpuSnapshot {
    at: Instant,
    /// (busy, all) clock ticks since boot, all cores.
    machine: (u64, u64),
    /// Thread id -> (group, ran ns, waited ns).
    threads: std::collections::HashMap<u32, (&'static str, u64, u64)>,
}

/// The server's threads by what they do, from their names.
fn thread_group(name: &str) -> &'static str {
    if name.starts_with("job-output") {
        "job_output"
    } else if name.starts_with("log ") {
        "tool_logs"
    } else if name.starts_with("tokio") {
        // The main runtime: requests, and its blocking pool (SQLite reads,
        // file writes).
        "requests"
    } else {
        "other"
    }
}

impl CpuSnapshot {
    fn take(pid: u32) -> CpuSnapshot {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let all: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        let mut threads = std::collections::HashMap::new();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let sched = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            let mut fields = sched
                .split_whitespace()
                .filter_map(|v| v.parse::<u64>().ok());
            if let (Some(ran), Some(waited)) = (fields.next(), fields.next()) {
                threads.insert(tid, (thread_group(name.trim()), ran, waited));
            }
        }
        CpuSnapshot {
            at: Instant::now(),
            machine: (all - idle, all),
            threads,
        }
    }

    /// The difference from `before`, with the request threads' wait for a
    /// core per request answered.
    fn since(&self, before: &CpuSnapshot, requests: f64) -> Value {
        let busy = self.machine.0.saturating_sub(before.machine.0) as f64;
        let all = self.machine.1.saturating_sub(before.machine.1) as f64;
        let mut groups: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for (tid, (group, ran, waited)) in &self.threads {
            // A thread started during the window counts from zero.
            let (r0, w0) = before.threads.get(tid).map_or((0, 0), |t| (t.1, t.2));
            let entry = groups.entry(group).or_default();
            entry.0 += ran.saturating_sub(r0);
            entry.1 += waited.saturating_sub(w0);
        }
        let request_wait_ns = groups.get("requests").map_or(0, |g| g.1) as f64;
        let ran = |group: &str| groups.get(group).map_or(0, |g| g.0) as f64;
        let window_ns = (self.at - before.at).as_nanos().max(1) as f64;
        json!({
            // Cores' worth of CPU the jobs' output took (reading, storing,
            // tool logs).
            "output_cores": round((ran("job_output") + ran("tool_logs")) / window_ns, 2),
            "request_cores": round(ran("requests") / window_ns, 2),
            "machine_busy": round(busy / all.max(1.0), 3),
            "server_ms": groups
                .iter()
                .map(|(group, (ran, waited))| {
                    (group.to_string(), json!({
                        "ran": round(*ran as f64 / 1e6, 1),
                        "waited": round(*waited as f64 / 1e6, 1),
                    }))
                })
                .collect::<serde_json::Map<_, _>>(),
            "request_wait_us_per_request": round(request_wait_ns / 1e3 / requests.max(1.0), 1),
        })
    }
}

/// How many lines a job has stored: the largest `after` with a line beyond it.
async fn stored_lines(server: &Server, id: &str) -> Result<u64> {
    let beyond = |after: u64| async move {
        let page = server
            .get(&format!("/jobs/{id}/log?after={after}&limit=1"))
            .await?;
        Ok::<bool, Box<dyn std::error::Error + Send + Sync>>(
            page["lines"].as_array().is_some_and(|l| !l.is_empty()),
        )
    };
    if !beyond(0).await? {
        return Ok(0);
    }
    let (mut low, mut high) = (0u64, 1024u64);
    while beyond(high).await? {
        low = high;
        high *= 2;
    }
    while high - low > 1 {
        let mid = (low + high) / 2;
        if beyond(mid).await? {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(high)
}

async fn load(bench: &Bench, profile: &Profile) -> Result<Value> {
    let server = bench.server_with(Tools::Fake, profile.env).await?;
    let idle_kib = status_kib(server.pid(), "VmRSS:");
    let result = load_with(bench, &server, profile).await;
    // The section's server ran nothing else: its high-water mark is the
    // peak of the section.
    let hwm_kib = status_kib(server.pid(), "VmHWM:");
    server.stop();
    let mut result = result?;
    result["idle_rss_mib"] = json!(round(idle_kib as f64 / 1024.0, 1));
    result["peak_rss_mib"] = json!(round(hwm_kib as f64 / 1024.0, 1));
    Ok(result)
}

/// Rounds of (idle window, loaded window) per endpoint (`BENCH_LOAD_ROUNDS`,
/// default 5: fewer for a quick comparison of two builds).
fn load_rounds() -> usize {
    std::env::var("BENCH_LOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5)
}
/// Seconds of each idle or loaded wrk window.
const LOAD_WINDOW_SECONDS: u64 = 2;

async fn load_with(bench: &Bench, server: &Server, profile: &Profile) -> Result<Value> {
    let rounds = load_rounds();
    server.fake(&[]);
    // A few finished jobs to list and fetch.
    let mut id = String::new();
    for _ in 0..5 {
        let (_, body) = server.post("/terraform/output", json!({})).await?;
        id = body["job_id"].as_str().unwrap_or_default().to_string();
    }
    let endpoints = [
        Endpoint {
            name: "GET /jobs/{id}",
            path: format!("/jobs/{id}"),
            body: None,
            connections: 4,
        },
        Endpoint {
            name: "GET /jobs",
            path: "/jobs".into(),
            body: None,
            connections: 4,
        },
        // One connection: generate holds the workspace while it writes, so
        // concurrent generates answer 409 by design.
        Endpoint {
            name: "POST /terraform/generate",
            path: "/terraform/generate".into(),
            body: Some(GENERATE_BODY),
            connections: 1,
        },
    ];
    let mut results = serde_json::Map::new();
    let (mut printed_all, mut stored_all) = (0u64, 0u64);
    // Each endpoint twice: saturating (every connection asks again as soon as
    // it is answered), then paced.
    let passes = endpoints
        .iter()
        .flat_map(|e| [(e, 0), (e, paced_pause_ms())]);
    for (endpoint, pause_ms) in passes {
        // The jobs printing (never catching up after a pause), stopped
        // (SIGSTOP to their process groups) for the idle windows: idle and
        // loaded windows alternate, so a change in what else the machine
        // runs hits both alike.
        server.fake(&[
            ("bytes", (profile.rate * LOAD_JOB_SECONDS).to_string()),
            ("rate", profile.rate.to_string()),
        ]);
        let mut jobs = Vec::new();
        for _ in 0..LOAD_JOBS {
            jobs.push(server.start_async("/terraform/output").await?);
        }
        let mut groups = Vec::new();
        for job in &jobs {
            groups.push(job_pid(server, job).await?);
        }
        let (mut idle, mut loaded) = (Vec::new(), Vec::new());
        let mut loaded_seconds = 0.0;
        let mut lines = 0;
        for _ in 0..rounds {
            for pid in &groups {
                signal(*pid, "STOP", true);
            }
            // What was read before the stop is taken in first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            idle.push(wrk(bench, server, endpoint, LOAD_WINDOW_SECONDS, pause_ms).await?);
            let before = stored_total(server, &jobs).await?;
            for pid in &groups {
                signal(*pid, "CONT", true);
            }
            let t = Instant::now();
            tokio::time::sleep(Duration::from_millis(300)).await;
            loaded.push(wrk(bench, server, endpoint, LOAD_WINDOW_SECONDS, pause_ms).await?);
            // What the server took in meanwhile: lines stored (100 bytes each).
            lines += stored_total(server, &jobs).await? - before;
            loaded_seconds += t.elapsed().as_secs_f64();
        }
        for pid in &groups {
            signal(*pid, "CONT", true);
        }
        // The jobs stop printing and end as they would: every line printed
        // is then stored (JOB_LOG_MAX_BYTES is above what they print).
        std::fs::write(server.fake_dir().join("stop"), "")?;
        for job in &jobs {
            server.wait_job(job).await?;
        }
        let printed = printed_lines(server, LOAD_JOBS)?;
        let mut stored = 0;
        for job in &jobs {
            stored += tool_lines(server, job).await?;
        }
        printed_all += printed;
        stored_all += stored;
        let figure = |windows: &[Value], key: &str| {
            median(
                &windows
                    .iter()
                    .map(|w| w[key].as_f64().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        let cpu = |windows: &[Value], key: &str| {
            median(
                &windows
                    .iter()
                    .map(|w| w["cpu"][key].as_f64().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        let summary = |windows: &[Value]| {
            json!({
                "p50_us": figure(windows, "p50_us"),
                "p99_us": figure(windows, "p99_us"),
                "rps": round(figure(windows, "rps"), 1),
                "machine_busy": cpu(windows, "machine_busy"),
                "request_cores": cpu(windows, "request_cores"),
                "output_cores": cpu(windows, "output_cores"),
                "request_wait_us_per_request": cpu(windows, "request_wait_us_per_request"),
                "windows": windows,
            })
        };
        let ratio = |key: &str| round(figure(&loaded, key) / figure(&idle, key), 2);
        // Each loaded window against the idle one just before it: how much
        // the ratio moves between rounds on this machine.
        let round_ratios: Vec<f64> = idle
            .iter()
            .zip(&loaded)
            .map(|(i, l)| {
                round(
                    l["p99_us"].as_f64().unwrap_or(f64::NAN)
                        / i["p99_us"].as_f64().unwrap_or(f64::NAN),
                    2,
                )
            })
            .collect();
        let name = if pause_ms == 0 {
            endpoint.name.to_string()
        } else {
            format!("{}, paced", endpoint.name)
        };
        let p99_ratio = ratio("p99_us");
        results.insert(
            name,
            json!({
                "connections": endpoint.connections,
                "pause_ms": pause_ms,
                "rounds": rounds,
                "window_seconds": LOAD_WINDOW_SECONDS,
                "p99_ratio": p99_ratio,
                "target_met": profile.target_p99_ratio.map(|t| p99_ratio <= t),
                // What the load added at p99: on a sub-millisecond idle p99,
                // a fraction of a millisecond moves the ratio a lot.
                "p99_added_ms": round(
                    (figure(&loaded, "p99_us") - figure(&idle, "p99_us")) / 1000.0,
                    2,
                ),
                "p99_ratio_by_round": round_ratios,
                "p50_ratio": ratio("p50_us"),
                "rps_ratio": ratio("rps"),
                "idle": summary(&idle),
                "loaded": summary(&loaded),
                "background_mb_per_s": round((lines * 100) as f64 / loaded_seconds / 1e6, 2),
                "lines_printed": printed,
                "lines_stored": stored,
            }),
        );
    }
    Ok(json!({
        "jobs": LOAD_JOBS,
        "rate_mb_per_s": round(profile.rate as f64 / 1e6, 1),
        "target_p99_ratio": profile.target_p99_ratio,
        "lines_printed": printed_all,
        "lines_stored": stored_all,
        "passes": Value::Object(results),
    }))
}

/// Lines printed in all by the fake's `jobs` printers that were told to stop
/// (each leaves `printed.<pid>`).
fn printed_lines(server: &Server, jobs: usize) -> Result<u64> {
    let mut counts = Vec::new();
    for entry in std::fs::read_dir(server.fake_dir())?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("printed.") {
            counts.push(
                std::fs::read_to_string(entry.path())?
                    .trim()
                    .parse::<u64>()?,
            );
        }
    }
    if counts.len() != jobs {
        return Err(format!("{} of {jobs} printers said what they printed", counts.len()).into());
    }
    Ok(counts.iter().sum())
}

/// Lines a finished job has stored from its tool (not the runner's own, which
/// come first or last).
async fn tool_lines(server: &Server, id: &str) -> Result<u64> {
    let all = stored_lines(server, id).await?;
    let system = |page: Value| {
        page["lines"].as_array().map_or(0, |lines| {
            lines.iter().filter(|l| l["stream"] == "system").count() as u64
        })
    };
    let head = server
        .get(&format!("/jobs/{id}/log?after=0&limit=8"))
        .await?;
    let tail = server
        .get(&format!(
            "/jobs/{id}/log?after={}&limit=8",
            all.saturating_sub(8).max(8)
        ))
        .await?;
    Ok(all - system(head) - system(tail))
}

/// The process (group) id of a running job, once it has one.
async fn job_pid(server: &Server, id: &str) -> Result<u32> {
    for _ in 0..200 {
        let job = server.get(&format!("/jobs/{id}")).await?;
        if let Some(pid) = job["pid"].as_u64() {
            return Ok(pid as u32);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("job {id} never started").into())
}

/// Lines stored by these jobs in all.
async fn stored_total(server: &Server, jobs: &[String]) -> Result<u64> {
    let mut total = 0;
    for job in jobs {
        total += stored_lines(server, job).await?;
    }
    Ok(total)
}

// ---------------------------------------------------------------- 3. memory

const FOLLOWERS: usize = 100;

async fn memory(bench: &Bench) -> Result<Value> {
    let mut runs = serde_json::Map::new();
    let sizes = std::env::var("BENCH_MEMORY_SIZES").unwrap_or_else(|_| "100MiB,1GiB".into());
    for (name, bytes) in [("100MiB", 100 * MIB), ("1GiB", 1024 * MIB)] {
        if !sizes.split(',').any(|size| size.trim() == name) {
            continue;
        }
        let server = bench.server(Tools::Fake).await?;
        let result = memory_run(&server, bytes).await;
        server.stop();
        runs.insert(name.into(), result?);
    }
    Ok(Value::Object(runs))
}

async fn memory_run(server: &Server, bytes: u64) -> Result<Value> {
    server.fake(&[("delay", "2".into()), ("bytes", bytes.to_string())]);
    let pid = server.pid();
    let idle_kib = status_kib(pid, "VmRSS:");
    let t = Instant::now();
    let id = server.start_async("/terraform/plan").await?;
    let sampler = RssSampler::start(pid);
    let url = format!("{}/jobs/{id}/events", server.base);
    let mut followers = tokio::task::JoinSet::new();
    for _ in 0..FOLLOWERS {
        // A client each: one connection per follower.
        let client = reqwest::Client::new();
        followers.spawn(follow(client, url.clone(), false));
    }
    let mut lines = Vec::new();
    let mut ended = 0;
    let deadline = Duration::from_secs(400);
    while let Ok(Some(joined)) = tokio::time::timeout(deadline, followers.join_next()).await {
        let seen = joined??;
        lines.push(seen.lines);
        ended += seen.ended as usize;
    }
    let wall = t.elapsed();
    let job = server.wait_job(&id).await?;
    let peak_sampled = sampler.finish().await;
    let hwm = status_kib(pid, "VmHWM:");
    Ok(json!({
        "printed_bytes": bytes,
        "followers": FOLLOWERS,
        "followers_ended": ended,
        "lines_per_follower_min": lines.iter().min(),
        "lines_per_follower_max": lines.iter().max(),
        "job_status": job["status"],
        "job_seconds": job["duration_ms"].as_f64().map(|v| round(v / 1000.0, 2)),
        "wall_seconds": round(wall.as_secs_f64(), 2),
        "idle_rss_mib": round(idle_kib as f64 / 1024.0, 1),
        "peak_rss_sampled_mib": round(peak_sampled as f64 / 1024.0, 1),
        "vm_hwm_mib": round(hwm as f64 / 1024.0, 1),
    }))
}

// ---------------------------------------------------------------- 4. latency

const STAMPS: u64 = 10_000;
const STAMP_RATE: u64 = 2_000;

async fn latency(bench: &Bench) -> Result<Value> {
    let server = bench.server(Tools::Fake).await?;
    let result = latency_with(&server).await;
    server.stop();
    let mut result = result?;
    // The same with the in-memory job store: how much of it is SQLite's.
    let server = bench
        .server_with(Tools::Fake, &[("DATABASE_URL", "memory:")])
        .await?;
    let memory_store = latency_with(&server).await;
    server.stop();
    result["with_memory_store"] = memory_store?;
    Ok(result)
}

async fn latency_with(server: &Server) -> Result<Value> {
    let controls = [
        ("delay", "1".to_string()),
        ("stamps", STAMPS.to_string()),
        ("stamp_rate", STAMP_RATE.to_string()),
    ];
    // Baseline: the same child read straight from its pipe.
    server.fake(&controls);
    let mut child = tokio::process::Command::new(server.root.path().join("bin-terraform"))
        .arg("plan")
        .arg(format!(
            "-out={}",
            server.root.path().join("direct.tfplan").display()
        ))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().unwrap();
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut direct = Vec::new();
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    while reader.read_line(&mut line).await? > 0 {
        let arrived = now_ns();
        if let Some(stamp) = line
            .trim()
            .strip_prefix("stamp ")
            .and_then(|s| s.parse::<u64>().ok())
        {
            direct.push(arrived.saturating_sub(stamp) as f64 / 1e6);
        }
        line.clear();
    }
    child.wait().await?;

    server.fake(&controls);
    let id = server.start_async("/terraform/plan").await?;
    let seen = follow(
        server.client.clone(),
        format!("{}/jobs/{id}/events", server.base),
        true,
    )
    .await?;
    let via = &seen.latencies_ms;
    Ok(json!({
        "lines": STAMPS,
        "lines_per_second": STAMP_RATE,
        "received": via.len(),
        "sse_p50_ms": round(percentile(via, 50.0), 3),
        "sse_p99_ms": round(percentile(via, 99.0), 3),
        "sse_max_ms": round(percentile(via, 100.0), 3),
        "pipe_received": direct.len(),
        "pipe_p50_ms": round(percentile(&direct, 50.0), 3),
        "pipe_p99_ms": round(percentile(&direct, 99.0), 3),
        "p99_ratio": round(percentile(via, 99.0) / percentile(&direct, 99.0), 2),
    }))
}

// ---------------------------------------------------------------- 5. start-up

async fn startup(bench: &Bench) -> Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let (mut health, mut ready, mut tools) = (vec![], vec![], vec![]);
    for _ in 0..5 {
        // Baseline: what /ready waits for, the two tools' version checks.
        let t = Instant::now();
        let (a, b) = tokio::join!(
            tokio::process::Command::new(&bench.terraform)
                .arg("version")
                .output(),
            tokio::process::Command::new(&bench.ansible)
                .arg("--version")
                .output(),
        );
        a?;
        b?;
        tools.push(ms(t.elapsed()));

        let (root, vars) = bench.server_env(Tools::Real);
        let port = vars
            .iter()
            .find(|(k, _)| k == "API_PORT")
            .unwrap()
            .1
            .clone();
        let base = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        let mut child = bench.spawn_server(root.path(), &vars)?;
        let mut up = None;
        let mut answered = None;
        while t.elapsed() < Duration::from_secs(30) {
            match client.get(format!("{base}/ready")).send().await {
                Ok(r) => {
                    up.get_or_insert_with(|| t.elapsed());
                    if r.status() == 200 {
                        answered = Some(t.elapsed());
                        break;
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        signal(child.id(), "TERM", false);
        let _ = child.wait();
        let answered = answered.ok_or("/ready never answered 200")?;
        // First answer of any kind: the listener is up.
        health.push(ms(up.unwrap_or(answered)));
        ready.push(ms(answered));
    }
    let r2 = |v: &Vec<f64>| v.iter().map(|x| round(*x, 1)).collect::<Vec<_>>();
    Ok(json!({
        "runs": 5,
        "ready_ms": r2(&ready),
        "first_answer_ms": r2(&health),
        "tool_checks_ms": r2(&tools),
        "ready_median_ms": round(median(&ready), 1),
        "first_answer_median_ms": round(median(&health), 1),
        "tool_checks_median_ms": round(median(&tools), 1),
        "ratio": round(median(&ready) / median(&tools), 2),
    }))
}

// ---------------------------------------------------------------- 6. scaling

const SCALING_LINES: u64 = 1_000;
const SCALING_HOLD: &str = "1";

async fn scaling(bench: &Bench) -> Result<Value> {
    let server = bench.server(Tools::Fake).await?;
    let result = scaling_with(&server).await;
    server.stop();
    result
}

async fn scaling_with(server: &Server) -> Result<Value> {
    server.fake(&[
        ("lines", SCALING_LINES.to_string()),
        ("hold", SCALING_HOLD.to_string()),
    ]);
    // One job first, so the first burst does not pay for lazy start-up work.
    server.post("/terraform/output", json!({})).await?;
    let mut results = serde_json::Map::new();
    for n in [10usize, 50, 100] {
        // Baseline: the same fakes started directly, n at once, output drained.
        let t = Instant::now();
        let mut direct = tokio::task::JoinSet::new();
        for _ in 0..n {
            let program = server.root.path().join("bin-terraform");
            direct.spawn(async move {
                tokio::process::Command::new(program)
                    .args(["output", "-no-color", "-json"])
                    .stdin(Stdio::null())
                    .output()
                    .await
            });
        }
        while let Some(done) = direct.join_next().await {
            done??;
        }
        let direct_secs = t.elapsed().as_secs_f64();

        let pid = server.pid();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before_kib = status_kib(pid, "VmRSS:");
        let sampler = RssSampler::start(pid);
        let t = Instant::now();
        let mut submits = tokio::task::JoinSet::new();
        for _ in 0..n {
            let client = server.client.clone();
            let url = format!("{}/terraform/output", server.base);
            submits.spawn(async move {
                client
                    .post(url)
                    .json(&json!({"async": true}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
        }
        let mut accepted = 0;
        while let Some(done) = submits.join_next().await {
            accepted += (done?? == 202) as usize;
        }
        // All submitted: wait until none is queued or running.
        loop {
            let mut busy = false;
            for status in ["running", "queued"] {
                let page = server
                    .get(&format!("/jobs?status={status}&limit=1"))
                    .await?;
                busy |= page["jobs"].as_array().is_some_and(|j| !j.is_empty());
            }
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let api_secs = t.elapsed().as_secs_f64();
        let peak_kib = sampler.finish().await;
        let failed = server.get("/jobs?status=failed&limit=500").await?["jobs"]
            .as_array()
            .map(|j| j.len())
            .unwrap_or(0);
        results.insert(
            n.to_string(),
            json!({
                "accepted": accepted,
                "failed_so_far": failed,
                "api_seconds": round(api_secs, 3),
                "direct_seconds": round(direct_secs, 3),
                "api_jobs_per_s": round(n as f64 / api_secs, 1),
                "direct_jobs_per_s": round(n as f64 / direct_secs, 1),
                "throughput_ratio": round(direct_secs / api_secs, 2),
                "rss_before_mib": round(before_kib as f64 / 1024.0, 1),
                "rss_peak_mib": round(peak_kib as f64 / 1024.0, 1),
                "rss_per_job_kib": round(peak_kib.saturating_sub(before_kib) as f64 / n as f64, 1),
            }),
        );
    }
    Ok(json!({
        "lines_per_job": SCALING_LINES,
        "hold_seconds": SCALING_HOLD,
        "runs": results,
    }))
}

// ---------------------------------------------------------------- report

fn report(raw: &Value) -> String {
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut row = |figure: &str,
                   value: String,
                   baseline: String,
                   ratio: String,
                   target: &str,
                   met: Option<bool>| {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        rows.push([
            figure.into(),
            value,
            baseline,
            ratio,
            target.into(),
            met.into(),
        ]);
    };
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let o = &raw["overhead"];
    row(
        "1. POST /terraform/plan (sync) vs direct `terraform plan`, median of 48 pairs",
        format!(
            "{:.1} ms (+{:.1} ms)",
            f(&o["api_median_ms"]),
            f(&o["median_added_ms"])
        ),
        format!("{:.1} ms", f(&o["direct_median_ms"])),
        format!("{:.3}", f(&o["median_ratio"])),
        "ratio <= 1.05",
        Some(f(&o["median_ratio"]) <= 1.05),
    );
    for (key, label) in [("realistic", "2a"), ("load", "2b")] {
        let profile = &raw[key];
        let Some(passes) = profile["passes"].as_object() else {
            continue;
        };
        let rate = f(&profile["rate_mb_per_s"]);
        let target = profile["target_p99_ratio"].as_f64();
        for (name, r) in passes {
            row(
                &format!(
                    "{label}. {name} p99 (p50), wrk -c{}{}, {} jobs x {rate:.0} MB/s; median of {} rounds of {} s idle, {} s loaded",
                    r["connections"],
                    match r["pause_ms"].as_u64() {
                        Some(0) | None => String::from(" as fast as answered"),
                        Some(ms) => format!(", each connection pausing {ms} ms after an answer"),
                    },
                    profile["jobs"],
                    r["rounds"],
                    r["window_seconds"],
                    r["window_seconds"]
                ),
                format!(
                    "{:.2} ms ({:.2} ms), p99 {:+.2} ms; {:.0} req/s; jobs took in {:.1} MB/s",
                    f(&r["loaded"]["p99_us"]) / 1000.0,
                    f(&r["loaded"]["p50_us"]) / 1000.0,
                    f(&r["p99_added_ms"]),
                    f(&r["loaded"]["rps"]),
                    f(&r["background_mb_per_s"])
                ),
                format!(
                    "idle {:.2} ms ({:.2} ms), {:.0} req/s",
                    f(&r["idle"]["p99_us"]) / 1000.0,
                    f(&r["idle"]["p50_us"]) / 1000.0,
                    f(&r["idle"]["rps"])
                ),
                format!("{:.2} ({})", f(&r["p99_ratio"]), round_spread(r)),
                &target.map_or("- (degradation check)".into(), |t| {
                    format!("p99 ratio <= {t}")
                }),
                target.map(|t| f(&r["p99_ratio"]) <= t),
            );
        }
        let (printed, stored) = (f(&profile["lines_printed"]), f(&profile["lines_stored"]));
        row(
            &format!(
                "{label}. lines the {} jobs x {rate:.0} MB/s printed, stored (all passes)",
                profile["jobs"]
            ),
            format!("{stored:.0} stored"),
            format!("{printed:.0} printed"),
            format!("{:.4}", stored / printed),
            "stored = printed",
            Some(stored == printed),
        );
        row(
            &format!("{label}. server peak RSS (VmHWM) over the section"),
            format!("{:.1} MiB", f(&profile["peak_rss_mib"])),
            format!("idle {:.1} MiB", f(&profile["idle_rss_mib"])),
            format!(
                "{:.2}",
                f(&profile["peak_rss_mib"]) / f(&profile["idle_rss_mib"])
            ),
            "-",
            None,
        );
    }
    let m = &raw["memory"];
    let small = &m["100MiB"];
    let big = &m["1GiB"];
    row(
        "3. peak RSS (VmHWM), job prints 100 MiB, 100 SSE followers",
        format!("{:.1} MiB", f(&small["vm_hwm_mib"])),
        format!("idle {:.1} MiB", f(&small["idle_rss_mib"])),
        format!("{:.2}", f(&small["vm_hwm_mib"]) / f(&small["idle_rss_mib"])),
        "<= 64 MiB",
        Some(f(&small["vm_hwm_mib"]) <= 64.0),
    );
    row(
        "3. peak RSS (VmHWM), job prints 1 GiB, 100 SSE followers",
        format!("{:.1} MiB", f(&big["vm_hwm_mib"])),
        format!("100 MiB run {:.1} MiB", f(&small["vm_hwm_mib"])),
        format!("{:.2}", f(&big["vm_hwm_mib"]) / f(&small["vm_hwm_mib"])),
        "<= 64 MiB, independent of output size",
        Some(f(&big["vm_hwm_mib"]) <= 64.0),
    );
    let l = &raw["latency"];
    row(
        "4. line written by the child -> SSE client, p99 (p50) of 10,000 at 2,000/s",
        format!(
            "{:.2} ms ({:.2} ms)",
            f(&l["sse_p99_ms"]),
            f(&l["sse_p50_ms"])
        ),
        format!(
            "pipe {:.3} ms ({:.3} ms)",
            f(&l["pipe_p99_ms"]),
            f(&l["pipe_p50_ms"])
        ),
        format!("{:.2}", f(&l["p99_ratio"])),
        "p99 <= 20 ms",
        Some(f(&l["sse_p99_ms"]) <= 20.0),
    );
    let lm = &l["with_memory_store"];
    row(
        "4. the same with `DATABASE_URL=memory:` (diagnostic)",
        format!(
            "{:.2} ms ({:.2} ms)",
            f(&lm["sse_p99_ms"]),
            f(&lm["sse_p50_ms"])
        ),
        format!(
            "pipe {:.3} ms ({:.3} ms)",
            f(&lm["pipe_p99_ms"]),
            f(&lm["pipe_p50_ms"])
        ),
        format!("{:.2}", f(&lm["p99_ratio"])),
        "p99 <= 20 ms",
        Some(f(&lm["sse_p99_ms"]) <= 20.0),
    );
    let s = &raw["startup"];
    row(
        "5. process start -> /ready 200, median of 5 (first answer)",
        format!(
            "{:.0} ms ({:.0} ms)",
            f(&s["ready_median_ms"]),
            f(&s["first_answer_median_ms"])
        ),
        format!(
            "tool version checks {:.0} ms",
            f(&s["tool_checks_median_ms"])
        ),
        format!("{:.2}", f(&s["ratio"])),
        "-",
        None,
    );
    if let Some(runs) = raw["scaling"]["runs"].as_object() {
        for n in ["10", "50", "100"] {
            let r = &runs[n];
            row(
                &format!("6. {n} concurrent output jobs: jobs/s; server RSS per job"),
                format!(
                    "{:.1} jobs/s; {:.0} KiB/job",
                    f(&r["api_jobs_per_s"]),
                    f(&r["rss_per_job_kib"])
                ),
                format!("direct {:.1} jobs/s", f(&r["direct_jobs_per_s"])),
                format!("{:.2}", f(&r["throughput_ratio"])),
                "-",
                None,
            );
        }
    }
    let machine = &raw["machine"];
    let mut out = String::from("# Benchmark results\n\n");
    out += &format!(
        "Run {} on {} cores ({}), kernel {}; {}; {}; commit {}{}; {:.0} s in all.\n\n",
        machine["date_utc"].as_str().unwrap_or(""),
        machine["cores"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["kernel"].as_str().unwrap_or(""),
        machine["terraform"].as_str().unwrap_or(""),
        machine["ansible"].as_str().unwrap_or(""),
        machine["git_commit"].as_str().unwrap_or(""),
        if machine["git_dirty"] == true {
            " (with uncommitted changes)"
        } else {
            ""
        },
        f(&raw["total_seconds"]),
    );
    out += "Every value is measured next to its baseline in the same run; the ratio is value / baseline \
            (for scaling: API jobs/s / direct jobs/s). Raw numbers: `latest.json`.\n\n";
    out += "| figure | value | baseline | ratio | target | met? |\n| --- | --- | --- | --- | --- | --- |\n";
    for r in rows {
        out += &format!("| {} |\n", r.join(" | "));
    }
    if let Some(table) = load_table(raw) {
        out += "\n";
        out += &table;
    }
    let profiles: Vec<(&str, &serde_json::Map<String, Value>)> =
        [("2a", "realistic"), ("2b", "load")]
            .into_iter()
            .filter_map(|(label, key)| Some((label, raw[key]["passes"].as_object()?)))
            .collect();
    if !profiles.is_empty() {
        out += "\nWhere the CPU went in figures 2a and 2b (medians of the windows; `/proc/stat` for the machine, \
                `/proc/<pid>/task/*/schedstat` for the server's threads): the share of both cores busy, \
                the cores' worth of CPU the server's request runtime ran and the jobs' output took \
                (reading, storing, tool logs), and how long the request runtime's threads waited \
                for a core, per request answered.\n\n";
        out += "| endpoint | machine busy, idle / loaded | request runtime, cores | job output, cores (loaded) | request threads' wait for a core per request, idle / loaded |\n| --- | --- | --- | --- | --- |\n";
        for (label, passes) in profiles {
            for (name, r) in passes {
                let (i, l) = (&r["idle"], &r["loaded"]);
                out += &format!(
                    "| {label}. {name} | {:.0}% / {:.0}% | {:.2} / {:.2} | {:.2} | {:.0} / {:.0} µs |\n",
                    f(&i["machine_busy"]) * 100.0,
                    f(&l["machine_busy"]) * 100.0,
                    f(&i["request_cores"]),
                    f(&l["request_cores"]),
                    f(&l["output_cores"]),
                    f(&i["request_wait_us_per_request"]),
                    f(&l["request_wait_us_per_request"]),
                );
            }
        }
    }
    for (key, v) in raw.as_object().into_iter().flatten() {
        if let Some(e) = v.get("error") {
            out += &format!("\nSection `{key}` failed: {e}\n");
        }
    }
    out
}

/// "rounds LOW-HIGH": each round's p99 ratio, the lowest and the highest.
fn round_spread(pass: &Value) -> String {
    let rounds: Vec<f64> = pass["p99_ratio_by_round"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let low = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let high = rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if rounds.is_empty() {
        "-".into()
    } else {
        format!("rounds {low:.2}-{high:.2}")
    }
}

/// The two load profiles side by side, a row per pass (whichever of the two
/// ran): p99 loaded / idle and the ratio, requests per second loaded, what
/// the jobs' output got; then whether every line was stored, and the peak
/// RSS.
fn load_table(raw: &Value) -> Option<String> {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let profiles = [&raw["realistic"], &raw["load"]];
    let names: Vec<String> = profiles
        .iter()
        .find_map(|p| p["passes"].as_object())?
        .keys()
        .cloned()
        .collect();
    let head = |p: &Value| {
        if p["passes"].is_object() {
            format!("{} jobs x {:.0} MB/s", p["jobs"], f(&p["rate_mb_per_s"]))
        } else {
            "(not run)".into()
        }
    };
    let mut out = format!(
        "Load profiles side by side: 2a, {} (target p99 ratio <= {}), and 2b, {} (degradation check, no target). \
         p99 loaded / idle, ratio (rounds), loaded req/s, the jobs' output taken in.\n\n",
        head(profiles[0]),
        profiles[0]["target_p99_ratio"]
            .as_f64()
            .map_or("-".into(), |t| t.to_string()),
        head(profiles[1]),
    );
    out += "| pass | 2a p99 loaded / idle | 2a ratio | 2a target met? | 2a req/s | 2b p99 loaded / idle | 2b ratio | 2b req/s | 2b MB/s taken in |\n\
            | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    let cell = |p: &Value, name: &str| {
        let r = &p["passes"][name];
        if !r.is_object() {
            return [
                "-".to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ];
        }
        [
            format!(
                "{:.2} / {:.2} ms",
                f(&r["loaded"]["p99_us"]) / 1000.0,
                f(&r["idle"]["p99_us"]) / 1000.0
            ),
            format!("{:.2} ({})", f(&r["p99_ratio"]), round_spread(r)),
            match r["target_met"].as_bool() {
                Some(true) => "yes".into(),
                Some(false) => "**no**".into(),
                None => "-".into(),
            },
            format!("{:.0}", f(&r["loaded"]["rps"])),
            format!("{:.1}", f(&r["background_mb_per_s"])),
        ]
    };
    for name in &names {
        let a = cell(profiles[0], name);
        let b = cell(profiles[1], name);
        out += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            a[0], a[1], a[2], a[3], b[0], b[1], b[3], b[4]
        );
    }
    out += "\n";
    for (label, p) in [("2a", profiles[0]), ("2b", profiles[1])] {
        if !p["passes"].is_object() {
            continue;
        }
        let (printed, stored) = (f(&p["lines_printed"]), f(&p["lines_stored"]));
        out += &format!(
            "- {label}, {}: {stored:.0} lines stored of {printed:.0} printed ({}); server peak RSS {:.1} MiB (idle {:.1} MiB)\n",
            head(p),
            if stored == printed {
                "none lost"
            } else {
                "**lines lost**"
            },
            f(&p["peak_rss_mib"]),
            f(&p["idle_rss_mib"]),
        );
    }
    Some(out)
}
