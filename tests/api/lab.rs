//! End to end, through the HTTP API only: the local lab stack (network
//! namespaces with sshd, root needed) and the real playbook build a primary
//! and two streaming replicas; an independent check reads replication state
//! with psql through the bastion, and `/cluster` reports it; a second run
//! changes nothing; the leader's host is lost and the cluster fails over
//! (`lab_ha.rs`); it is backed up and restored to a point in time
//! (`lab_backup.rs`); a second workspace is deployed beside it with one
//! `/deploy`, which fails at run on a vault made with another password and
//! is resumed after `/ansible/vault` fixes it; destroy leaves nothing
//! behind. Each step's wall time is printed.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::helpers::*;

#[path = "lab_backup.rs"]
mod backup;
#[path = "lab_ha.rs"]
mod ha;

const ENVIRONMENT: &str = "e2e";
const NETWORK_INDEX: u32 = 42;
/// The second workspace's lab, side by side with the first.
const SIDE_WORKSPACE: &str = "side";
const SIDE_ENVIRONMENT: &str = "e2eside";
const SIDE_NETWORK_INDEX: u32 = 43;
const LAB_ROOT: &str = "/var/lib/pgcluster-lab";

fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: the lab needs network namespaces".into());
    }
    None
}

/// The newest PostgreSQL server installed on this machine.
fn installed_postgresql() -> u32 {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server packages (scripts/test.sh installs them)")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("bin/initdb").is_file())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .max()
        .expect("an installed PostgreSQL server")
}

struct Timer(Vec<(String, f64)>);

impl Timer {
    async fn step<F: std::future::Future<Output = Answer>>(&mut self, name: &str, f: F) -> Answer {
        let started = Instant::now();
        let answer = f.await;
        let secs = started.elapsed().as_secs_f64();
        eprintln!("e2e step {name}: {secs:.1}s -> {}", answer.status);
        self.0.push((name.to_string(), secs));
        assert!(
            answer.status < 300,
            "{name} failed: {}",
            serde_json::to_string_pretty(&answer.body).unwrap()
        );
        answer
    }
}

/// Runs SQL on a lab node as postgres over its own socket (the lab keeps
/// each node's files under `hosts/<address>`), through the bastion with the
/// ssh config the server wrote.
fn psql(ssh_config: &str, host: &str, address: &str, sql: &str) -> (bool, String) {
    let socket = format!("{LAB_ROOT}/{ENVIRONMENT}/hosts/{address}/run");
    let remote = format!(
        "cd / && runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -h {socket} -d postgres -c \"{sql}\""
    );
    let output = Command::new("ssh")
        .args(["-F", ssh_config, host, &remote])
        .output()
        .expect("ssh runs");
    let text = if output.status.success() {
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    } else {
        String::from_utf8_lossy(&output.stderr).trim().to_string()
    };
    (output.status.success(), text)
}

fn recap_changed(output: &str) -> Vec<(String, u32)> {
    output
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .filter_map(|l| {
            let host = l.split_whitespace().next()?.to_string();
            let changed = l
                .split("changed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((host, changed))
        })
        .collect()
}

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.starts_with(&format!("pgc-{ENVIRONMENT}-"))
                || n.starts_with(&format!("pgc-{SIDE_ENVIRONMENT}-"))
        })
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicating_cluster_is_built_checked_rerun_and_destroyed_through_the_api() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED end-to-end lab test: {reason}");
        return;
    }
    let playbook =
        std::env::var("ANSIBLE_PLAYBOOK_BINARY").unwrap_or_else(|_| "ansible-playbook".into());
    let app = Arc::new(
        spawn_app_with(AppOptions {
            tools: Tools::RealTerraform,
            vars: vec![
                (
                    "TERRAFORM_DIR",
                    repo().join("terraform/local").display().to_string(),
                ),
                ("ANSIBLE_DIR", repo().join("ansible").display().to_string()),
                ("ANSIBLE_PLAYBOOK_BINARY", playbook),
                ("SSH_BINARY", "ssh".into()),
                ("CLUSTER_MONITOR_SECONDS", "2".into()),
                ("BACKUP_SCHEDULER_SECONDS", "2".into()),
            ],
        })
        .await,
    );
    // A failed check must not leave the lab behind: run the steps in a task,
    // destroy whatever it built, then report its panic.
    let outcome = tokio::spawn(build_and_check(app.clone())).await;
    if app
        .get(&format!("/workspaces/{SIDE_WORKSPACE}/cluster"))
        .await
        .status
        != 404
    {
        let side = app
            .post(
                &format!("/workspaces/{SIDE_WORKSPACE}/terraform/destroy"),
                json!({"confirm": SIDE_WORKSPACE}),
            )
            .await;
        assert_eq!(side.status, 200, "{:?}", side.body);
    }
    let started = Instant::now();
    let destroy = app
        .post("/terraform/destroy", json!({"confirm": "default"}))
        .await;
    eprintln!(
        "e2e step destroy: {:.1}s -> {}",
        started.elapsed().as_secs_f64(),
        destroy.status
    );
    let mut times = match outcome {
        Ok(times) => times,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    };
    times.push(("destroy".into(), started.elapsed().as_secs_f64()));
    assert_eq!(destroy.status, 200, "{:?}", destroy.body);
    assert!(
        lab_namespaces().is_empty(),
        "namespaces left: {:?}",
        lab_namespaces()
    );
    assert!(
        !std::path::Path::new(LAB_ROOT).join(ENVIRONMENT).exists(),
        "lab directory left"
    );
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let leftovers: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| {
            [ENVIRONMENT, SIDE_ENVIRONMENT].iter().any(|env| {
                l.contains(&format!("{LAB_ROOT}/{env}/")) || l.contains(&format!("pgc-{env}-"))
            })
        })
        .map(String::from)
        .collect();
    assert!(leftovers.is_empty(), "processes left: {leftovers:?}");
    let report: Vec<String> = times.iter().map(|(n, s)| format!("{n} {s:.1}s")).collect();
    eprintln!("e2e wall times: {}", report.join(", "));
}

async fn build_and_check(app: Arc<TestApp>) -> Vec<(String, f64)> {
    let keys = app.root.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    for name in ["bastion", "db"] {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(keys.join(name))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut t = Timer(Vec::new());
    t.step(
        "vault",
        app.post(
            "/ansible/vault",
            json!({"replication_password": "e2e-replication-Secret-7"}),
        ),
    )
    .await;

    // Two replicas, checked independently, then a second run changing nothing.
    let (primary, replicas, first) = deploy(&app, &mut t, &keys, 2, "").await;
    assert!(!recap_changed(&first).is_empty(), "a PLAY RECAP: {first}");
    let started = Instant::now();
    check_cluster(&app, &primary, &replicas).await;
    t.0.push(("independent check".into(), started.elapsed().as_secs_f64()));
    let version = installed_postgresql();
    let rerun = t
        .step(
            "run again",
            app.post(
                "/ansible/run",
                json!({"output": true, "postgresql_version": version}),
            ),
        )
        .await;
    let second = rerun.body["output"].as_str().unwrap().to_string();
    let changed = recap_changed(&second);
    assert!(changed.len() >= 3, "{second}");
    assert!(
        changed.iter().all(|(_, c)| *c == 0),
        "second run changed something: {changed:?}\n{second}"
    );

    hosts_vanish(&app, &mut t, replicas.len()).await;

    // Scale down to one replica, then up to three: slots follow, replicas stream.
    for count in [1, 3] {
        let (primary, replicas, _) =
            deploy(&app, &mut t, &keys, count, &format!(" ({count} replicas)")).await;
        assert_eq!(replicas.len(), count);
        let started = Instant::now();
        check_cluster(&app, &primary, &replicas).await;
        t.0.push((
            format!("check ({count} replicas)"),
            started.elapsed().as_secs_f64(),
        ));
    }

    // Synchronous mode on, then the leader's host lost.
    let key = |name: &str| keys.join(name).display().to_string();
    t.step(
        "configure (synchronous mode)",
        app.post(
            "/ansible/configure",
            json!({
                "bastion_key_path": key("bastion"), "db_key_path": key("db"),
                "max_connections": "77", "work_mem": "8MB", "synchronous_mode": true,
            }),
        ),
    )
    .await;
    t.step(
        "run (synchronous mode)",
        app.post(
            "/ansible/run",
            json!({"postgresql_version": installed_postgresql()}),
        ),
    )
    .await;
    ha::failover_and_back(&app, &mut t, 3).await;
    backup::backup_and_restore(&app, &mut t).await;

    side_by_side(&app, &mut t, &keys).await;
    t.0
}

/// Sets a lab host's links down (`false`) or up (`true`), as a cut cable.
fn set_links(host: &str, links: &[&str], up: bool) {
    let namespace = format!("pgc-{ENVIRONMENT}-{host}");
    for link in links {
        let state = if up { "up" } else { "down" };
        let done = Command::new("ip")
            .args(["-n", &namespace, "link", "set", "dev", link, state])
            .status()
            .unwrap();
        assert!(done.success(), "ip -n {namespace} link set {link} {state}");
    }
}

/// Hosts whose network is cut mid-run: the run fails within a bounded time
/// naming the host and frees the workspace; `/cluster` names every host it
/// cannot reach when the bastion is cut off; both work again once the
/// network is back.
async fn hosts_vanish(app: &TestApp, t: &mut Timer, replicas: usize) {
    let version = installed_postgresql();
    let last = format!("replica{replicas}");
    let run = app
        .post(
            "/ansible/run",
            json!({"async": true, "postgresql_version": version}),
        )
        .await;
    assert_eq!(run.status, 202, "{:?}", run.body);
    let id = run.body["job_id"].as_str().unwrap().to_string();
    assert!(
        app.wait_for_log(&id, "TASK [").await,
        "the run is under way"
    );
    set_links(&last, &["priv0"], false);
    let started = Instant::now();
    let job = app.wait_for_job(&id).await;
    let took = started.elapsed().as_secs_f64();
    set_links(&last, &["priv0"], true);
    t.0.push(("run with a host cut off".into(), took));
    assert_eq!(job["status"], "failed", "{job}");
    // ssh gives a silent host up within 20 s; the leader waits up to
    // patroni_wait_seconds (90) for every member to run.
    assert!(
        took < 180.0,
        "the run failed within a bounded time: {took:.0}s"
    );
    let log = app.get(&format!("/jobs/{id}/log")).await.body.to_string();
    assert!(
        log.contains(&format!("[{last}]: UNREACHABLE!")),
        "the log names the unreachable host"
    );
    let workspace = app.get("/workspaces/default").await;
    assert_eq!(workspace.body["busy_with"], serde_json::Value::Null);
    t.step(
        "run after the network is back",
        app.post("/ansible/run", json!({"postgresql_version": version})),
    )
    .await;

    set_links("bastion", &["pub0"], false);
    let started = Instant::now();
    let cut = app.get("/cluster").await;
    let took = started.elapsed().as_secs_f64();
    set_links("bastion", &["pub0"], true);
    t.0.push(("/cluster with the bastion cut off".into(), took));
    assert_eq!(cut.status, 200, "{:?}", cut.body);
    assert_eq!(cut.body["healthy"], false);
    let problems = cut.body["problems"].to_string();
    assert!(
        problems.contains("primary1: unreachable")
            && problems.contains(&format!("{last}: unreachable")),
        "{problems}"
    );
    assert!(took < 120.0, "bounded: {took:.0}s");
    let back = t
        .step("/cluster after the network is back", app.get("/cluster"))
        .await;
    assert_eq!(back.body["healthy"], true, "{:?}", back.body);
}

/// A second workspace on its own lab, deployed with one call while the
/// first cluster runs: the deploy stops at run on a vault encrypted with
/// another password, and resumes from run once `/ansible/vault` rewrote it.
async fn side_by_side(app: &TestApp, t: &mut Timer, keys: &std::path::Path) {
    let key = |name: &str| keys.join(name).display().to_string();
    t.step(
        "create workspace",
        app.post(
            "/workspaces",
            json!({"name": SIDE_WORKSPACE, "stack": "local"}),
        ),
    )
    .await;
    // A vault made with a password the server does not have.
    let vault_file = app.root.path().join("vault.yml");
    let other_password = app.root.path().join("other-password");
    std::fs::write(&other_password, "not-the-server-password\n").unwrap();
    let plain = app.root.path().join("vault-plain.yml");
    std::fs::write(
        &plain,
        "replication_password: \"e2e-replication-Secret-7\"\n",
    )
    .unwrap();
    let playbook =
        std::env::var("ANSIBLE_PLAYBOOK_BINARY").unwrap_or_else(|_| "ansible-playbook".into());
    let vault_binary = std::path::Path::new(&playbook).with_file_name("ansible-vault");
    let encrypted = Command::new(&vault_binary)
        .arg("encrypt")
        .arg("--vault-password-file")
        .arg(&other_password)
        .arg("--output")
        .arg(&vault_file)
        .arg(&plain)
        .output()
        .expect("ansible-vault runs");
    assert!(
        encrypted.status.success(),
        "{}",
        String::from_utf8_lossy(&encrypted.stderr)
    );

    let version = installed_postgresql();
    let body = json!({
        "variables": {
            "bastion_key_pair": key("bastion.pub"), "db_key_pair": key("db.pub"),
            "replica_count": 1, "environment": SIDE_ENVIRONMENT,
            "network_index": SIDE_NETWORK_INDEX,
        },
        "configure": {"bastion_key_path": key("bastion"), "db_key_path": key("db"), "max_connections": "55"},
        "postgresql_version": version,
    });
    let path = format!("/workspaces/{SIDE_WORKSPACE}/deploy");
    let started = Instant::now();
    let failed = app.post(&path, body).await;
    t.0.push((
        "deploy (fails at run)".into(),
        started.elapsed().as_secs_f64(),
    ));
    assert_eq!(failed.status, 400, "{:?}", failed.body);
    assert_eq!(failed.body["failed_step"], "run", "{:?}", failed.body);
    let details = failed.body["details"].as_str().unwrap();
    assert!(details.to_lowercase().contains("decrypt"), "{details}");

    t.step(
        "vault fixed",
        app.post(
            "/ansible/vault",
            json!({"replication_password": "e2e-replication-Secret-7"}),
        ),
    )
    .await;
    let resumed = t
        .step(
            "deploy resumed at run",
            app.post_empty(&format!("{path}/resume")),
        )
        .await;
    let statuses: Vec<&str> = resumed.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "skipped",
            "skipped",
            "skipped",
            "skipped",
            "skipped",
            "skipped",
            "succeeded"
        ]
    );

    // Both clusters run side by side, each healthy with its own hosts.
    let side = t
        .step(
            "side cluster",
            app.get(&format!("/workspaces/{SIDE_WORKSPACE}/cluster")),
        )
        .await;
    assert_eq!(side.body["healthy"], true, "{:?}", side.body);
    assert_eq!(side.body["replicas"].as_array().unwrap().len(), 1);
    let first = t.step("first cluster", app.get("/cluster")).await;
    assert_eq!(first.body["healthy"], true, "{:?}", first.body);
    assert_eq!(first.body["replicas"].as_array().unwrap().len(), 3);
    assert_ne!(
        side.body["primary"]["address"],
        first.body["primary"]["address"]
    );

    let destroyed = t
        .step(
            "side destroy",
            app.post(
                &format!("/workspaces/{SIDE_WORKSPACE}/terraform/destroy"),
                json!({"confirm": SIDE_WORKSPACE}),
            ),
        )
        .await;
    assert_eq!(destroyed.status, 200);
}

/// generate → plan → apply → output → configure → run, for `count` replicas.
async fn deploy(
    app: &TestApp,
    t: &mut Timer,
    keys: &std::path::Path,
    count: usize,
    label: &str,
) -> (String, Vec<String>, String) {
    let key = |name: &str| keys.join(name).display().to_string();
    t.step(
        &format!("generate{label}"),
        app.post(
            "/terraform/generate",
            json!({
                "bastion_key_pair": key("bastion.pub"), "db_key_pair": key("db.pub"),
                "replica_count": count.to_string(), "environment": ENVIRONMENT,
                "network_index": NETWORK_INDEX,
            }),
        ),
    )
    .await;
    if label.is_empty() {
        t.step("init", app.post_empty("/terraform/init")).await;
    }
    t.step(&format!("plan{label}"), app.post_empty("/terraform/plan"))
        .await;
    t.step(&format!("apply{label}"), app.post_empty("/terraform/apply"))
        .await;
    let output = t
        .step(
            &format!("output{label}"),
            app.post_empty("/terraform/output"),
        )
        .await;
    let outputs = &output.body["outputs"];
    let primary = outputs["primary_db_addr"].as_str().unwrap().to_string();
    let replicas: Vec<String> = outputs["replica_db_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    t.step(
        &format!("configure{label}"),
        app.post(
            "/ansible/configure",
            json!({
                "bastion_key_path": key("bastion"), "db_key_path": key("db"),
                "max_connections": "77", "work_mem": "8MB",
            }),
        ),
    )
    .await;
    let version = installed_postgresql();
    let run = t
        .step(
            &format!("run{label}"),
            app.post(
                "/ansible/run",
                json!({"output": true, "postgresql_version": version}),
            ),
        )
        .await;
    let output = run.body["output"].as_str().unwrap().to_string();
    (primary, replicas, output)
}

/// Independent of the playbook's own check: psql through the bastion.
async fn check_cluster(app: &TestApp, primary: &str, replicas: &[String]) {
    let ssh_config = app
        .workspace()
        .join("ansible/ssh_config")
        .display()
        .to_string();
    let (ok, streaming) = psql(
        &ssh_config,
        "primary",
        primary,
        "select count(*) from pg_stat_replication where state = 'streaming'",
    );
    assert!(ok, "{streaming}");
    assert_eq!(streaming, replicas.len().to_string(), "replicas streaming");
    let (_, slots) = psql(
        &ssh_config,
        "primary",
        primary,
        "select count(*) from pg_replication_slots",
    );
    assert_eq!(
        slots,
        replicas.len().to_string(),
        "one slot per replica, no stale ones"
    );
    let token = format!("e2e-{}-{}", std::process::id(), replicas.len());
    let (ok, out) = psql(
        &ssh_config,
        "primary",
        primary,
        &format!(
            "create table if not exists e2e_check (token text); insert into e2e_check values ('{token}')"
        ),
    );
    assert!(ok, "{out}");
    for (i, address) in replicas.iter().enumerate() {
        let name = format!("replica{}", i + 1);
        let mut seen = String::new();
        for _ in 0..50 {
            let (_, out) = psql(
                &ssh_config,
                &name,
                address,
                &format!("select count(*) from e2e_check where token = '{token}'"),
            );
            seen = out;
            if seen == "1" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(seen, "1", "{name} reads the row written on the primary");
        let (_, recovery) = psql(&ssh_config, &name, address, "select pg_is_in_recovery()");
        assert_eq!(recovery, "t", "{name} is a standby");
        let (write_ok, _) = psql(
            &ssh_config,
            &name,
            address,
            "insert into e2e_check values ('x')",
        );
        assert!(!write_ok, "{name} refuses writes");
    }
    let mut nodes = vec![("primary".to_string(), primary.to_string())];
    nodes.extend(
        replicas
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("replica{}", i + 1), a.clone())),
    );
    for (host, address) in nodes {
        let (_, value) = psql(&ssh_config, &host, &address, "show max_connections");
        assert_eq!(value, "77", "max_connections on {host}");
    }

    // The API's own view agrees.
    let cluster = app.get("/cluster").await;
    assert_eq!(cluster.status, 200, "{:?}", cluster.body);
    assert_eq!(cluster.body["healthy"], true, "{:?}", cluster.body);
    assert_eq!(cluster.body["primary"]["address"], primary);
    let reported = cluster.body["replicas"].as_array().unwrap();
    assert_eq!(reported.len(), replicas.len());
    for (replica, address) in reported.iter().zip(replicas) {
        assert_eq!(replica["address"], address.as_str());
        assert_eq!(replica["state"], "streaming", "{replica}");
        assert_eq!(replica["in_recovery"], true, "{replica}");
        assert!(replica["lag_bytes"].is_number(), "{replica}");
        assert_eq!(replica["slot"]["active"], true, "{replica}");
    }
}
