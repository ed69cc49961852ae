//! `GET /cluster`: replication state read by the read-only status playbook
//! (the lab test reads a real cluster; here the fake reports).

use serde_json::json;

use crate::ansible::configured_app;
use crate::helpers::{read_lines, spawn_app};

const REPORT: &str = r#"{
  "addresses": {"primary1": "10.0.1.10", "replica1": "10.0.2.11", "replica2": "10.0.3.12"},
  "leader": "primary1",
  "patroni": [
    {"name": "primary1", "role": "leader", "state": "running", "host": "10.0.1.10", "port": 5432, "timeline": 2},
    {"name": "replica1", "role": "sync_standby", "state": "running", "host": "10.0.2.11", "port": 5432, "timeline": 2, "lag": 0},
    {"name": "replica2", "role": "replica", "state": "running", "host": "10.0.3.12", "port": 5432, "timeline": 2, "lag": 16384}
  ],
  "primary": {"primary1": {"in_recovery": false, "server_version": "15.8", "current_wal_lsn": "0/3000148",
    "standbys": [
      {"application_name": "replica1", "state": "streaming", "sync_state": "async", "lag_bytes": 0, "replay_lag_seconds": 0.002},
      {"application_name": "replica2", "state": "catchup", "sync_state": "async", "lag_bytes": 16384, "replay_lag_seconds": 1.5}
    ],
    "slots": [{"slot_name": "pgc_replica1", "active": true, "retained_bytes": 0},
              {"slot_name": "pgc_replica2", "active": true, "retained_bytes": 16384}]}},
  "replicas": {
    "replica1": {"in_recovery": true, "replay_lsn": "0/3000148", "wal_receiver": {"status": "streaming", "slot_name": "pgc_replica1"}},
    "replica2": {"in_recovery": true, "replay_lsn": "0/2FFC148", "wal_receiver": {"status": "streaming", "slot_name": "pgc_replica2"}}
  }
}"#;

#[tokio::test]
async fn the_cluster_report_joins_each_replica_with_the_primarys_view() {
    let app = configured_app().await;
    app.fake("status_report", REPORT);
    let answer = app.get("/cluster?postgresql_version=15").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = &answer.body;
    assert_eq!(body["primary"]["name"], "primary1");
    assert_eq!(body["primary"]["address"], "10.0.1.10");
    assert_eq!(body["replicas"][0]["state"], "streaming");
    assert_eq!(body["replicas"][1]["lag_bytes"], 16384);
    assert_eq!(body["replicas"][1]["slot"]["slot_name"], "pgc_replica2");
    assert_eq!(body["healthy"], false);
    assert_eq!(
        body["problems"],
        json!(["replica2: not streaming from the primary (state: catchup)"])
    );
    assert_eq!(body["postgresql_version"], 15);
    assert_eq!(body["leader"], "primary1");
    assert_eq!(body["timeline"], 2);
    assert_eq!(body["members"][2]["lag_bytes"], 16384);
    assert_eq!(body["members"][1]["role"], "sync_standby");

    // A read-only playbook: status.yml, no vault, no lock.
    let argv = read_lines(&app.last_call().join("argv"));
    assert!(argv[0].ends_with("status.yml"), "{argv:?}");
    assert!(!argv.iter().any(|a| a.contains("vault")), "{argv:?}");
    let job = app
        .get(&format!("/jobs/{}", body["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(job.body["kind"], "ansible.status");
    // The report file is not left behind.
    let tmp = app.workspace().join("ansible/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("status-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn the_cluster_needs_an_inventory_and_a_valid_version() {
    let app = spawn_app().await;
    let answer = app.get("/cluster").await;
    assert_eq!(answer.status, 409, "{:?}", answer.body);
    assert!(answer.body["error"].as_str().unwrap().contains("configure"));
    for bad in ["9", "abc", "15.1", "%24(id)"] {
        let answer = app.get(&format!("/cluster?postgresql_version={bad}")).await;
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
        assert!(answer.body["fields"]["postgresql_version"].is_string());
    }
    let unknown = app.get("/cluster?colour=blue").await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    assert!(app.calls().is_empty());
}

#[tokio::test]
async fn a_failed_status_run_answers_with_its_details() {
    let app = configured_app().await;
    app.fake("ansible_fail", "");
    let answer = app.get("/cluster").await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "Reading the cluster's state failed");
    assert!(
        answer.body["details"]
            .as_str()
            .unwrap()
            .contains("fake task failure")
    );
}
