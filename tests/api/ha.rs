//! High availability: `/cluster/primary`, the Patroni operations and the
//! leader monitor, with a fake `ssh` printing what the probe script would
//! print on the bastion, and the fake playbook writing operate.yml's result.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ansible::configured_app;
use crate::helpers::*;

/// The members of `configured_app`'s inventory.
const MEMBERS: [(&str, &str); 3] = [
    ("primary1", "10.0.1.10"),
    ("replica1", "10.0.2.11"),
    ("replica2", "10.0.3.12"),
];

/// What the probe script prints when `leader` leads on `timeline` and every
/// member runs; `edit` changes one member's entry in Patroni's listing.
pub(crate) fn probe_output(
    leader: Option<&str>,
    timeline: u64,
    edit: impl Fn(&str, &mut Value),
) -> String {
    let members: Vec<Value> = MEMBERS
        .iter()
        .map(|(name, address)| {
            let mut member = json!({"name": name, "host": address, "port": 5432,
                "api_url": format!("http://{address}:8008/patroni"), "state": "running",
                "timeline": timeline});
            if Some(*name) == leader {
                member["role"] = json!("leader");
            } else {
                member["role"] = json!("replica");
                member["lag"] = json!(0);
            }
            edit(name, &mut member);
            member
        })
        .collect();
    let mut answers = json!({});
    for (name, address) in MEMBERS {
        answers[address] = json!({
            "cluster_status": 200,
            "cluster": {"members": members},
            "primary_status": if Some(name) == leader { 200 } else { 503 },
        });
    }
    answers.to_string()
}

fn leading(leader: &str) -> String {
    probe_output(Some(leader), 1, |_, _| {})
}

/// Replaces the fake probe's answer at once (the monitor may be reading it).
pub(crate) fn set_probe(app: &TestApp, output: &str) {
    let tmp = app.fake_dir.join("probe.tmp");
    std::fs::write(&tmp, output).unwrap();
    std::fs::rename(&tmp, app.fake_dir.join("probe")).unwrap();
}

/// The views are kept a second: wait them out after changing the probe.
async fn past_the_cached_view() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

pub(crate) fn ssh_calls(app: &TestApp) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(app.fake_dir.join("ssh_calls"))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The extra vars operate.yml was given (the last argument).
fn operation_vars(call: &std::path::Path) -> Value {
    let argv = read_lines(&call.join("argv"));
    serde_json::from_str(argv.last().unwrap()).unwrap()
}

#[tokio::test]
async fn the_primary_is_the_member_answering_as_primary_through_the_bastion() {
    let app = configured_app().await;
    set_probe(&app, &leading("replica1"));
    let started = Instant::now();
    let answer = app.get("/cluster/primary").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer.body,
        json!({"name": "replica1", "address": "10.0.2.11", "port": 5432})
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // One ssh to the bastion with the generated config, the script on its
    // standard input and the members' addresses as arguments.
    let calls = ssh_calls(&app);
    assert_eq!(calls.len(), 1);
    let argv = read_lines(&calls[0].join("argv"));
    let ssh_config = app.workspace().join("ansible/ssh_config");
    assert_eq!(
        argv[..2],
        ["-F".to_string(), ssh_config.display().to_string()]
    );
    assert_eq!(
        argv[argv.len() - 7..],
        [
            "bastion",
            "python3",
            "-",
            "8008",
            "10.0.1.10",
            "10.0.2.11",
            "10.0.3.12"
        ]
    );
    let script = std::fs::read_to_string(calls[0].join("stdin")).unwrap();
    assert!(
        script.contains("/primary") || script.contains("\"primary\""),
        "{script}"
    );
    let env = std::fs::read_to_string(calls[0].join("env")).unwrap();
    assert!(!env.contains(VAULT_PASSWORD));

    // A second look within the second is answered from the same view.
    let again = app.get("/workspaces/default/cluster/primary").await;
    assert_eq!(again.body["name"], "replica1");
    assert_eq!(ssh_calls(&app).len(), 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_probe() {
    let app = configured_app().await;
    set_probe(&app, &leading("primary1"));
    app.fake("probe_sleep", "0.5");
    let (a, b, c) = tokio::join!(
        app.get("/cluster/primary"),
        app.get("/cluster/primary"),
        app.get("/cluster/primary")
    );
    for answer in [a, b, c] {
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    assert_eq!(ssh_calls(&app).len(), 1);
}

#[tokio::test]
async fn no_leader_or_an_unreachable_bastion_is_a_503_that_says_which() {
    let app = configured_app().await;
    set_probe(&app, &probe_output(None, 1, |_, _| {}));
    let none = app.get("/cluster/primary").await;
    assert_eq!(none.status, 503, "{:?}", none.body);
    assert_eq!(none.headers["retry-after"], "1");
    let error = none.body["error"].as_str().unwrap();
    assert!(error.starts_with("the cluster has no leader"), "{error}");

    past_the_cached_view().await;
    app.fake("probe_fail", "");
    let down = app.get("/cluster/primary").await;
    assert_eq!(down.status, 503, "{:?}", down.body);
    assert_eq!(
        down.body["error"],
        "the cluster could not be probed: the bastion could not be reached: ssh: connect to \
         host 203.0.113.10 port 22: Connection timed out"
    );
}

#[tokio::test]
async fn a_bastion_that_does_not_answer_is_given_up_within_two_seconds() {
    let app = configured_app().await;
    set_probe(&app, &leading("primary1"));
    app.fake("probe_sleep", "10");
    let started = Instant::now();
    let answer = app.get("/cluster/primary").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("no answer through the bastion within 1.8 s")
    );
}

#[tokio::test]
async fn before_configure_every_cluster_operation_is_a_conflict_and_nothing_runs() {
    let app = spawn_app().await;
    assert_eq!(app.get("/cluster/primary").await.status, 409);
    for (path, body) in [
        ("/cluster/switchover", json!({})),
        (
            "/cluster/failover",
            json!({"candidate": "replica1", "confirm": "default"}),
        ),
        ("/cluster/restart", json!({})),
        ("/cluster/reinit", json!({"member": "replica1"})),
    ] {
        let answer = app.post(path, body).await;
        assert_eq!(answer.status, 409, "{path}: {:?}", answer.body);
        assert!(answer.body["error"].as_str().unwrap().contains("configure"));
    }
    assert!(ssh_calls(&app).is_empty());
    assert!(app.calls().is_empty());
}

/// The answer refuses `field` (400, named in `fields`).
fn refuses(answer: &Answer, field: &str) {
    assert_eq!(answer.status, 400, "{field}: {:?}", answer.body);
    assert!(
        answer.body["fields"][field].is_string(),
        "{field}: {:?}",
        answer.body
    );
}

/// The answer is a conflict whose error mentions `text`.
fn conflict(answer: &Answer, text: &str) {
    assert_eq!(answer.status, 409, "{text}: {:?}", answer.body);
    let error = answer.body["error"].as_str().unwrap();
    assert!(error.contains(text), "{error:?} does not mention {text:?}");
}

#[tokio::test]
async fn operations_that_cannot_work_on_a_healthy_cluster_are_refused_before_anything_runs() {
    let app = configured_app().await;
    let before = app.calls().len();
    set_probe(
        &app,
        &probe_output(Some("primary1"), 1, |name, member| {
            if name == "replica2" {
                member["lag"] = json!(2 * 1024 * 1024);
            }
        }),
    );
    let post = |path: &'static str, body: Value| {
        let app = &app;
        async move { app.post(path, body).await }
    };
    refuses(
        &post("/cluster/switchover", json!({"candidate": "replica9"})).await,
        "candidate",
    );
    refuses(
        &post("/cluster/switchover", json!({"candidate": "primary1"})).await,
        "candidate",
    );
    refuses(
        &post("/cluster/switchover", json!({"candidate": "x;reboot"})).await,
        "candidate",
    );
    refuses(
        &post("/cluster/switchover", json!({"scheduled_at": "tomorrow"})).await,
        "scheduled_at",
    );
    refuses(
        &post(
            "/cluster/switchover",
            json!({"scheduled_at": "2020-01-01T00:00:00Z"}),
        )
        .await,
        "scheduled_at",
    );
    conflict(
        &post("/cluster/switchover", json!({"candidate": "replica2"})).await,
        "maximum_lag_on_failover",
    );
    refuses(
        &post("/cluster/failover", json!({"candidate": "replica1"})).await,
        "confirm",
    );
    refuses(
        &post(
            "/cluster/failover",
            json!({"candidate": "replica1", "confirm": "prod"}),
        )
        .await,
        "confirm",
    );
    conflict(
        &post(
            "/cluster/failover",
            json!({"candidate": "replica1", "confirm": "default"}),
        )
        .await,
        "use switchover",
    );
    refuses(&post("/cluster/reinit", json!({})).await, "member");
    refuses(
        &post("/cluster/reinit", json!({"member": "replica9"})).await,
        "member",
    );
    conflict(
        &post("/cluster/reinit", json!({"member": "primary1"})).await,
        "is the leader",
    );
    refuses(
        &post("/cluster/restart", json!({"member": "replica9"})).await,
        "member",
    );
    let unknown = post("/cluster/restart", json!({"colour": "blue"})).await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    assert_eq!(app.calls().len(), before, "a refused operation ran a tool");
}

#[tokio::test]
async fn a_switchover_needs_a_leader_and_every_member_running() {
    let app = configured_app().await;
    set_probe(&app, &probe_output(None, 1, |_, _| {}));
    conflict(
        &app.post("/cluster/switchover", json!({})).await,
        "no leader",
    );

    past_the_cached_view().await;
    set_probe(
        &app,
        &probe_output(Some("primary1"), 1, |name, member| {
            if name == "replica1" {
                member["state"] = json!("stopped");
                member["lag"] = json!("unknown");
            }
        }),
    );
    conflict(
        &app.post("/cluster/switchover", json!({"candidate": "replica2"}))
            .await,
        "replica1 is not running (state: stopped)",
    );

    past_the_cached_view().await;
    app.fake("probe_fail", "");
    let down = app.post("/cluster/switchover", json!({})).await;
    assert_eq!(down.status, 503, "{:?}", down.body);
    assert_eq!(
        app.calls().len(),
        1,
        "only configure's terraform output ran"
    );
}

#[tokio::test]
async fn a_switchover_runs_operate_yml_with_the_vault_and_answers_its_result() {
    let app = configured_app().await;
    set_probe(&app, &leading("primary1"));
    app.fake(
        "operation_result",
        r#"{"old_leader": "primary1", "new_leader": "replica1", "timeline": 2,
            "write_unavailable_seconds": 1.6}"#,
    );
    let answer = app
        .post("/cluster/switchover", json!({"candidate": "replica1"}))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["message"], "Switchover done");
    assert_eq!(answer.body["old_leader"], "primary1");
    assert_eq!(answer.body["new_leader"], "replica1");
    assert_eq!(answer.body["timeline"], 2);
    assert_eq!(answer.body["write_unavailable_seconds"], 1.6);

    let job_id = answer.body["job_id"].as_str().unwrap();
    let job = app.get(&format!("/jobs/{job_id}")).await.body;
    assert_eq!(job["kind"], "cluster.switchover");
    assert_eq!(job["result"]["new_leader"], "replica1");
    assert_eq!(job["request"]["candidate"], "replica1");

    let call = app.last_call();
    let argv = read_lines(&call.join("argv"));
    assert!(argv[0].ends_with("ansible/operate.yml") || argv[0].ends_with("/operate.yml"));
    assert!(
        argv.iter().any(|a| a.ends_with("/postgresql.yml")),
        "{argv:?}"
    );
    assert_eq!(
        std::fs::read_to_string(call.join("vault_password"))
            .unwrap()
            .trim_end(),
        VAULT_PASSWORD
    );
    let vars = operation_vars(&call);
    assert_eq!(vars["pgcluster_operation"], "switchover");
    assert_eq!(vars["pgcluster_leader"], "primary1");
    assert_eq!(vars["pgcluster_candidate"], "replica1");
    assert_eq!(vars["pgcluster_via"], "replica1");
    assert_eq!(vars["pgcluster_scheduled_at"], "");
    assert_eq!(vars["pgcluster_members"]["replica2"], "10.0.3.12");
    // The result file is not left behind.
    let result_file = vars["pgcluster_result_file"].as_str().unwrap();
    assert!(!std::path::Path::new(result_file).exists());
}

#[tokio::test]
async fn an_operation_started_async_answers_202_and_its_job_holds_the_result() {
    let app = configured_app().await;
    set_probe(&app, &leading("primary1"));
    app.fake(
        "operation_result",
        r#"{"restarted": ["replica1", "replica2"], "leader": "primary1"}"#,
    );
    let answer = app
        .post(
            "/cluster/restart",
            json!({"async": true, "pending_only": false}),
        )
        .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let job_id = answer.body["job_id"].as_str().unwrap();
    assert_eq!(answer.headers["location"], format!("/jobs/{job_id}"));
    let job = app.wait_for_job(job_id).await;
    assert_eq!(job["status"], "succeeded", "{job:?}");
    assert_eq!(job["kind"], "cluster.restart");
    assert_eq!(
        job["result"],
        json!({"restarted": ["replica1", "replica2"], "leader": "primary1"})
    );
    let vars = operation_vars(&app.last_call());
    assert_eq!(
        vars["pgcluster_restart_order"],
        json!(["replica1", "replica2", "primary1"])
    );
    assert_eq!(vars["pgcluster_pending_only"], false);
}

#[tokio::test]
async fn a_playbook_that_writes_no_result_fails_the_operation() {
    let app = configured_app().await;
    set_probe(&app, &leading("primary1"));
    let answer = app
        .post("/cluster/reinit", json!({"member": "replica2"}))
        .await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "Reinit failed");
    assert!(
        answer.body["details"]
            .as_str()
            .unwrap()
            .contains("operate.yml wrote no result")
    );
}

/// The events the monitor recorded for `default`.
async fn events(app: &TestApp) -> Vec<Value> {
    let answer = app.get("/cluster/events").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["events"].as_array().unwrap().clone()
}

async fn wait_for_events(app: &TestApp, count: usize) -> Vec<Value> {
    for _ in 0..150 {
        let seen = events(app).await;
        if seen.len() >= count {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the monitor did not record {count} events: {:?}",
        events(app).await
    );
}

#[tokio::test]
async fn the_monitor_records_leader_changes_with_their_cause_and_counts_them() {
    let app = spawn_app_with(AppOptions {
        vars: vec![("CLUSTER_MONITOR_SECONDS", "1".into())],
        ..AppOptions::default()
    })
    .await;
    app.fake("outputs", crate::ansible::OUTPUTS_TWO_REPLICAS);
    let configured = app
        .post("/ansible/configure", crate::ansible::configure_body(&app))
        .await;
    assert_eq!(configured.status, 200, "{:?}", configured.body);
    set_probe(&app, &leading("primary1"));
    // Seen a few times: the first leader seen is no change.
    let started = Instant::now();
    while ssh_calls(&app).len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the monitor does not probe"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(events(&app).await.is_empty());

    // Patroni fails over by itself.
    set_probe(&app, &probe_output(Some("replica1"), 2, |_, _| {}));
    let recorded = wait_for_events(&app, 1).await;
    let event = &recorded[0];
    assert_eq!(event["kind"], "leader_changed");
    assert_eq!(event["from"], "primary1");
    assert_eq!(event["to"], "replica1");
    assert_eq!(event["timeline"], 2);
    assert_eq!(event["cause"], "automatic");
    assert_eq!(event["workspace"], "default");

    // A switchover of ours hands it back.
    app.fake(
        "operation_result",
        r#"{"old_leader": "replica1", "new_leader": "primary1", "timeline": 3,
            "write_unavailable_seconds": 0.8}"#,
    );
    let switched = app
        .post("/cluster/switchover", json!({"candidate": "primary1"}))
        .await;
    assert_eq!(switched.status, 200, "{:?}", switched.body);
    set_probe(&app, &probe_output(Some("primary1"), 3, |_, _| {}));
    let recorded = wait_for_events(&app, 2).await;
    assert_eq!(recorded[0]["cause"], "switchover", "{recorded:?}");
    assert_eq!(recorded[0]["to"], "primary1");

    let metrics = app.get_text("/metrics").await;
    for cause in ["automatic", "switchover"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("pgcluster_leader_changes_total{")
                    && l.contains("workspace=\"default\"")
                    && l.contains(&format!("cause=\"{cause}\""))),
            "{cause}: {metrics}"
        );
    }
}
