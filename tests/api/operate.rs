//! `ansible/operate.yml` run by the real ansible-playbook against a fake
//! Patroni (`tests/fixtures/fake_patroni.py`) on loopback addresses: the
//! calls it makes, their order, and the result file the server reads.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::repo;

const PASSWORD: &str = "rest-pw-7Hq!not-in-output";

/// The fake Patroni, stopped when dropped.
struct FakePatroni {
    child: Child,
    port: u16,
    members: Value,
}

impl Drop for FakePatroni {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakePatroni {
    /// `major`: the Patroni version whose answers it gives (3 or 4).
    fn start(dir: &Path, major: u32) -> FakePatroni {
        // Addresses of this test only, on the loopback network.
        let net = 20 + std::process::id() % 200;
        let address = |host: u32| format!("127.{net}.0.{host}");
        let port = std::net::TcpListener::bind((address(2).as_str(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let members =
            json!({"primary1": address(2), "replica1": address(3), "replica2": address(4)});
        let mut child = Command::new("python3")
            .arg(repo().join("tests/fixtures/fake_patroni.py"))
            .arg(port.to_string())
            .arg(PASSWORD)
            .args(
                ["primary1", "replica1", "replica2"]
                    .map(|n| format!("{n}={}", members[n].as_str().unwrap())),
            )
            .current_dir(dir)
            .env("FAKE_PATRONI_MAJOR", major.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fake Patroni");
        let mut ready = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        FakePatroni {
            child,
            port,
            members,
        }
    }

    fn get(&self, member: &str, path: &str) {
        let address = self.members[member].as_str().unwrap();
        let mut stream = std::net::TcpStream::connect((address, self.port)).unwrap();
        use std::io::{Read, Write};
        write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
    }
}

/// Runs operate.yml with the server's extra vars (completed by `vars`);
/// returns whether it succeeded, its output and its result.
fn operate(dir: &Path, patroni: &FakePatroni, vars: Value) -> (bool, String, Value) {
    let inventory = dir.join("hosts.ini");
    let mut hosts = String::from("[db]\n");
    for name in ["primary1", "replica1", "replica2"] {
        hosts.push_str(&format!(
            "{name} ansible_host={}\n",
            patroni.members[name].as_str().unwrap()
        ));
    }
    hosts.push_str(
        "[all:vars]\nansible_connection=local\nansible_python_interpreter={{ ansible_playbook_python }}\n",
    );
    std::fs::write(&inventory, hosts).unwrap();
    let result_file = dir.join("result.json");
    let _ = std::fs::remove_file(&result_file);
    let mut all = json!({
        "pgcluster_workspace": "default", "pgcluster_leader": "", "pgcluster_candidate": "",
        "pgcluster_member": "", "pgcluster_scheduled_at": "", "pgcluster_pending_only": true,
        "pgcluster_switchover_leader": false, "pgcluster_restart_order": [],
        "pgcluster_members": patroni.members, "pgcluster_result_file": result_file,
        "patroni_rest_port": patroni.port, "patroni_restapi_password": PASSWORD,
    });
    for (key, value) in vars.as_object().unwrap() {
        all[key] = value.clone();
    }
    let ansible =
        std::env::var("ANSIBLE_PLAYBOOK_BINARY").unwrap_or_else(|_| "ansible-playbook".into());
    let output = Command::new(ansible)
        .arg(repo().join("ansible/operate.yml"))
        .arg("-i")
        .arg(&inventory)
        .arg("-e")
        .arg(all.to_string())
        .env("ANSIBLE_HOME", dir.join("home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("home/tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-playbook runs (the test command installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result = std::fs::read(&result_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    (output.status.success(), text, result)
}

/// The unsafe calls the fake Patroni received, oldest first; forgets them.
fn calls(dir: &Path) -> Vec<Value> {
    let log = dir.join("calls.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn operate_yml_switches_over_restarts_reinits_and_fails_over_through_patroni() {
    switchover_restart_reinit_failover(3);
}

#[test]
fn operate_yml_works_with_patroni_4s_role_and_state_names() {
    switchover_restart_reinit_failover(4);
}

fn switchover_restart_reinit_failover(major: u32) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let patroni = FakePatroni::start(dir, major);

    // Switchover: the leader is asked, the gap without a primary measured.
    let (ok, output, result) = operate(
        dir,
        &patroni,
        json!({"pgcluster_operation": "switchover", "pgcluster_leader": "primary1",
               "pgcluster_candidate": "replica1", "pgcluster_via": "replica1"}),
    );
    assert!(ok, "{output}");
    assert!(!output.contains(PASSWORD), "{output}");
    assert_eq!(result["old_leader"], "primary1");
    assert_eq!(result["new_leader"], "replica1");
    assert_eq!(result["timeline"], 2);
    // The fake has no primary for 0.6 s; polled every 0.2 s.
    let gap = result["write_unavailable_seconds"].as_f64().unwrap();
    assert!((0.5..2.0).contains(&gap), "{gap}");
    assert_eq!(
        calls(dir),
        [json!({"member": "primary1", "path": "/switchover",
                "body": {"leader": "primary1", "candidate": "replica1"}})]
    );

    // Rolling restart, the leader last, handed over first: primary1 has no
    // pending settings left (its switchover restarted it), replica2 does.
    let (ok, output, result) = operate(
        dir,
        &patroni,
        json!({"pgcluster_operation": "restart", "pgcluster_leader": "replica1",
               "pgcluster_candidate": "primary1", "pgcluster_switchover_leader": true,
               "pgcluster_restart_order": ["primary1", "replica2", "replica1"],
               "pgcluster_via": "replica1"}),
    );
    assert!(ok, "{output}");
    assert_eq!(
        result,
        json!({"restarted": ["replica2"], "leader": "primary1"})
    );
    let paths: Vec<(Value, Value)> = calls(dir)
        .into_iter()
        .map(|c| (c["member"].clone(), c["path"].clone()))
        .collect();
    assert_eq!(
        paths,
        [
            (json!("replica2"), json!("/restart")),
            (json!("replica1"), json!("/switchover"))
        ]
    );

    // Reinit waits until the member runs again.
    let (ok, output, result) = operate(
        dir,
        &patroni,
        json!({"pgcluster_operation": "reinit", "pgcluster_leader": "primary1",
               "pgcluster_member": "replica2", "pgcluster_via": "primary1"}),
    );
    assert!(ok, "{output}");
    assert_eq!(result, json!({"member": "replica2"}));

    // Patroni's refusal is the job's failure, with its answer.
    let (ok, output, _) = operate(
        dir,
        &patroni,
        json!({"pgcluster_operation": "switchover", "pgcluster_leader": "replica2",
               "pgcluster_via": "primary1"}),
    );
    assert!(!ok);
    assert!(
        output.contains("Patroni answered 412: leader name does not match"),
        "{output}"
    );
    assert!(!output.contains(PASSWORD), "{output}");
    calls(dir);

    // Failover once the leader is gone.
    patroni.get("primary1", "/_stop_leader");
    let (ok, output, result) = operate(
        dir,
        &patroni,
        json!({"pgcluster_operation": "failover", "pgcluster_leader": "primary1",
               "pgcluster_candidate": "replica2", "pgcluster_via": "replica2"}),
    );
    assert!(ok, "{output}");
    assert_eq!(result["old_leader"], "primary1");
    assert_eq!(result["new_leader"], "replica2");
    assert_eq!(result["timeline"], 4);
    assert_eq!(calls(dir)[0]["path"], "/failover");
}

#[test]
fn the_probe_script_reads_every_members_patroni_and_finds_the_leader() {
    probe(3);
}

#[test]
fn the_probe_script_reads_patroni_4s_answers() {
    probe(4);
}

fn probe(major: u32) {
    use pgcluster_api::tools::patroni::{InventoryHost, PROBE_SCRIPT, parse_probe};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let patroni = FakePatroni::start(dir.path(), major);
    let mut hosts: Vec<InventoryHost> = ["primary1", "replica1", "replica2"]
        .iter()
        .map(|name| InventoryHost {
            name: name.to_string(),
            address: patroni.members[name].as_str().unwrap().to_string(),
        })
        .collect();
    // A member that does not answer at all.
    hosts.push(InventoryHost {
        name: "replica3".into(),
        address: "127.0.0.1".into(),
    });
    // As ssh runs it on the bastion: `python3 - <port> <addresses>`.
    let mut probe = Command::new("python3")
        .arg("-")
        .arg(patroni.port.to_string())
        .args(hosts.iter().map(|h| &h.address))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    probe
        .stdin
        .take()
        .unwrap()
        .write_all(PROBE_SCRIPT.as_bytes())
        .unwrap();
    let output = probe.wait_with_output().unwrap();
    assert!(output.status.success());
    let view = parse_probe(&String::from_utf8_lossy(&output.stdout), &hosts).unwrap();
    assert_eq!(view.leader.as_deref(), Some("primary1"));
    assert_eq!(view.timeline, Some(1));
    let replica1 = view.member("replica1").unwrap();
    assert_eq!(replica1.role.as_deref(), Some("replica"));
    let state = if major == 4 { "streaming" } else { "running" };
    assert_eq!(replica1.state.as_deref(), Some(state));
    assert_eq!(replica1.lag_bytes, Some(0));
    assert!(replica1.pending_restart);
    let replica3 = view.member("replica3").unwrap();
    assert!(!replica3.reachable);
    assert_eq!(replica3.state, None);
}
