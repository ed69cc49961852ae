//! End to end, through the HTTP API only: the local lab stack (network
//! namespaces with sshd, root needed) and the real playbook build a primary
//! and two streaming replicas; an independent check reads replication state
//! with psql through the bastion; a second run changes nothing; destroy
//! leaves nothing behind. Each step's wall time is printed.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::helpers::*;

const ENVIRONMENT: &str = "e2e";
const NETWORK_INDEX: u32 = 42;
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
        .filter(|n| n.starts_with(&format!("pgc-{ENVIRONMENT}-")))
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
            ],
        })
        .await,
    );
    // A failed check must not leave the lab behind: run the steps in a task,
    // destroy whatever it built, then report its panic.
    let outcome = tokio::spawn(build_and_check(app.clone())).await;
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
            l.contains(&format!("{LAB_ROOT}/{ENVIRONMENT}/"))
                || l.contains(&format!("pgc-{ENVIRONMENT}-"))
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
    t.0
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
}
