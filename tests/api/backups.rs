//! Backups and restore with the fake playbook: what each route checks before
//! anything runs, what it runs (`backup.yml`, `restore.yml`, `status.yml`)
//! and with which inputs, and how the answers read the playbooks' results.
//! The lab test (`lab_backup.rs`) runs the real ones on a real cluster.

use serde_json::{Value, json};

use crate::ansible::{OUTPUTS_TWO_REPLICAS, configure_body, configured_app};
use crate::helpers::*;

/// The stack's outputs with a repository, as terraform/local gives one.
fn outputs_with_repository() -> String {
    let mut outputs: Value = serde_json::from_str(OUTPUTS_TWO_REPLICAS).unwrap();
    outputs["backup_repository"] = json!({"sensitive": false, "type": ["object", {}],
        "value": {"type": "posix", "path": "/srv/pgcluster/backups"}});
    outputs.to_string()
}

async fn app_with_repository() -> TestApp {
    let app = spawn_app().await;
    app.fake("outputs", &outputs_with_repository());
    let answer = app.post("/ansible/configure", configure_body(&app)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    app
}

/// The status report with the repository section `status.yml` writes.
fn report() -> Value {
    json!({
        "addresses": {"primary1": "10.0.1.10", "replica1": "10.0.2.11", "replica2": "10.0.3.12"},
        "leader": "primary1",
        "patroni": null,
        "primary": {"primary1": {"in_recovery": false}},
        "replicas": {"replica1": null, "replica2": null},
        "backup": {
            "stanza": "e2e", "member": "primary1",
            "checked_at": "2026-12-07T10:00:00.5Z", "current_wal_lsn": "0/9000060", "error": null,
            "archiver": {"archived_count": 12, "last_archived_wal": "000000010000000000000008",
                "last_archived_time": "2026-12-07T09:59:00Z", "failed_count": 0,
                "last_failed_wal": null, "last_failed_time": null},
            "info": [{"name": "e2e", "status": {"code": 0, "message": "ok"},
                "archive": [{"id": "15-1", "min": "000000010000000000000001",
                             "max": "000000010000000000000008"}],
                "backup": [{"label": "20261207-090000F", "type": "full", "prior": null,
                    "error": false, "timestamp": {"start": 1796634000, "stop": 1796634010},
                    "archive": {"start": "000000010000000000000002",
                                "stop": "000000010000000000000002"},
                    "lsn": {"start": "0/2000028", "stop": "0/2000100"},
                    "info": {"size": 23000000, "delta": 23000000,
                             "repository": {"size": 3000000, "delta": 3000000}}}]}]
        }
    })
}

/// The fake playbook's calls whose playbook is `name`.
fn calls_of(app: &TestApp, name: &str) -> Vec<Vec<String>> {
    app.calls()
        .iter()
        .map(|call| read_lines(&call.join("argv")))
        .filter(|argv| argv.first().is_some_and(|p| p.ends_with(name)))
        .collect()
}

#[tokio::test]
async fn nothing_is_backed_up_or_restored_before_configure_or_without_a_repository() {
    let app = spawn_app().await;
    for (method, path, body) in [
        ("POST", "/backups", json!({})),
        ("GET", "/backups", Value::Null),
        (
            "POST",
            "/restore",
            json!({"target": "latest", "confirm": "default"}),
        ),
    ] {
        let answer = match method {
            "GET" => app.get(path).await,
            _ => app.post(path, body.clone()).await,
        };
        assert_eq!(answer.status, 409, "{method} {path}: {:?}", answer.body);
        assert!(
            answer.body["error"].as_str().unwrap().contains("configure"),
            "{:?}",
            answer.body
        );
    }

    // The stack gives no repository: backups are not configured.
    let app = configured_app().await;
    let vars = std::fs::read_to_string(app.workspace().join("ansible/postgresql.yml")).unwrap();
    assert!(!vars.contains("pgbackrest_repository"), "{vars}");
    let answer = app.post("/backups", json!({"type": "full"})).await;
    assert_eq!(answer.status, 409, "{:?}", answer.body);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("backup_repository"),
        "{:?}",
        answer.body
    );
    assert!(
        app.calls()
            .iter()
            .all(|c| { !read_lines(&c.join("argv"))[0].ends_with("backup.yml") })
    );
}

#[tokio::test]
async fn bad_input_names_its_field_and_runs_nothing() {
    let app = app_with_repository().await;
    let before = app.calls().len();
    let cases = [
        ("/backups", json!({"type": "weekly"}), "type"),
        ("/backups", json!({"type": 3}), "type"),
        ("/restore", json!({"target": "latest"}), "confirm"),
        (
            "/restore",
            json!({"target": "latest", "confirm": "other"}),
            "confirm",
        ),
        ("/restore", json!({"confirm": "default"}), "target"),
        (
            "/restore",
            json!({"target": "now", "confirm": "default"}),
            "target",
        ),
        (
            "/restore",
            json!({"target": {"time": "2026-12-07 09:00"}, "confirm": "default"}),
            "target.time",
        ),
        (
            "/restore",
            json!({"target": {"time": "2999-01-01T00:00:00Z"}, "confirm": "default"}),
            "target.time",
        ),
        (
            "/restore",
            json!({"target": {"backup": "last-sunday"}, "confirm": "default"}),
            "target.backup",
        ),
        (
            "/restore",
            json!({"target": {"lsn": "0/XYZ"}, "confirm": "default"}),
            "target.lsn",
        ),
    ];
    for (path, body, field) in cases {
        let answer = app.post(path, body.clone()).await;
        assert_eq!(answer.status, 400, "{path} {body}: {:?}", answer.body);
        assert!(
            answer.body["fields"][field].is_string(),
            "{path} {body} names {field}: {:?}",
            answer.body
        );
    }
    let unknown = app
        .post("/backups", json!({"type": "full", "compress": "zstd"}))
        .await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    assert_eq!(app.calls().len(), before, "nothing ran");
}

#[tokio::test]
async fn a_backup_runs_backup_yml_and_answers_its_label() {
    let app = app_with_repository().await;
    let vars = std::fs::read_to_string(app.workspace().join("ansible/postgresql.yml")).unwrap();
    assert!(
        vars.contains("pgbackrest_repository:\n  path: !unsafe \"/srv/pgcluster/backups\""),
        "{vars}"
    );
    app.fake(
        "operation_result",
        &json!({"label": "20261207-090000F", "type": "full", "leader": "replica1",
            "started_at": "2026-12-07T09:00:00Z", "stopped_at": "2026-12-07T09:00:10Z",
            "database_bytes": "23000000", "repository_bytes": 3000000})
        .to_string(),
    );
    let answer = app.post("/backups", json!({"type": "full"})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["label"], "20261207-090000F");
    assert_eq!(answer.body["leader"], "replica1");
    assert_eq!(answer.body["database_bytes"], 23000000);
    let argv = calls_of(&app, "backup.yml").pop().expect("backup.yml ran");
    assert!(
        argv.contains(&"--vault-password-file".to_string()),
        "{argv:?}"
    );
    let inputs: Value = serde_json::from_str(argv.last().unwrap()).unwrap();
    assert_eq!(inputs["pgbackrest_backup_type"], "full");
    assert!(inputs["pgcluster_result_file"].is_string());
    let job = app
        .get(&format!(
            "/jobs/{}",
            answer.body["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job.body["kind"], "cluster.backup");
    assert_eq!(job.body["result"]["label"], "20261207-090000F");
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains(
            "pgcluster_backup_last_success_timestamp_seconds{workspace=\"default\",type=\"full\"} 1796634010"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "pgcluster_backup_duration_seconds_count{workspace=\"default\",type=\"full\"}"
        )
    );

    // The default type is incr; async answers 202 with the job.
    let queued = app.post("/backups", json!({"async": true})).await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    let job = app
        .wait_for_job(queued.body["job_id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["request"]["type"], "incr");
}

#[tokio::test]
async fn the_repository_and_the_window_are_read_from_the_status_report() {
    let app = app_with_repository().await;
    app.fake("status_report", &report().to_string());
    let answer = app.get("/backups").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = &answer.body;
    assert_eq!(body["stanza"], "e2e");
    assert_eq!(body["backups"][0]["label"], "20261207-090000F");
    assert_eq!(body["backups"][0]["stopped_at"], "2026-12-07T09:00:10Z");
    assert_eq!(body["backups"][0]["lsn_stop"], "0/2000100");
    assert_eq!(
        body["recovery_window"],
        json!({"earliest": "2026-12-07T09:00:10Z", "latest": "2026-12-07T10:00:00.5Z",
               "earliest_lsn": "0/2000100", "latest_lsn": "0/9000060"})
    );
    assert_eq!(body["archiving"]["ok"], true);
    assert_eq!(
        body["archiving"]["last_archived_wal"],
        "000000010000000000000008"
    );

    let cluster = app.get("/cluster").await;
    assert_eq!(cluster.status, 200, "{:?}", cluster.body);
    assert_eq!(cluster.body["archiving"]["ok"], true);
    assert_eq!(cluster.body["last_backup"]["label"], "20261207-090000F");

    // Archiving that fails is a problem of the cluster and a metric.
    let mut failing = report();
    failing["backup"]["archiver"]["failed_count"] = json!(3);
    failing["backup"]["archiver"]["last_failed_wal"] = json!("000000010000000000000009");
    failing["backup"]["archiver"]["last_failed_time"] = json!("2026-12-07T09:59:30Z");
    app.fake("status_report", &failing.to_string());
    let cluster = app.get("/cluster").await;
    assert_eq!(cluster.body["archiving"]["ok"], false);
    assert!(
        cluster.body["problems"]
            .to_string()
            .contains("archiving: WAL 000000010000000000000009 failed"),
        "{:?}",
        cluster.body["problems"]
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("pgcluster_wal_archive_failed_total{workspace=\"default\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_restore_is_checked_against_the_window_then_runs_restore_yml() {
    let app = app_with_repository().await;
    app.fake("status_report", &report().to_string());
    for (target, says) in [
        (
            json!({"time": "2026-12-07T08:00:00Z"}),
            "outside the recovery window",
        ),
        (json!({"lsn": "0/1000000"}), "outside the recovery window"),
        (json!({"backup": "20261201-090000F"}), "20261207-090000F"),
    ] {
        let answer = app
            .post("/restore", json!({"target": target, "confirm": "default"}))
            .await;
        assert_eq!(answer.status, 409, "{target}: {:?}", answer.body);
        let error = answer.body["error"].as_str().unwrap();
        assert!(error.contains(says), "{error}");
        if says != "20261207-090000F" {
            assert!(
                error.contains("2026-12-07T09:00:10Z"),
                "names the window: {error}"
            );
        }
    }
    assert!(calls_of(&app, "restore.yml").is_empty(), "nothing restored");

    app.fake(
        "operation_result",
        &json!({"leader": "primary1", "timeline": "3", "backup": "20261207-090000F",
            "target": {"type": "time", "target": "2026-12-07T09:30:00Z"},
            "restored_at": "2026-12-07T10:05:00Z"})
        .to_string(),
    );
    let answer = app
        .post(
            "/restore",
            json!({"target": {"time": "2026-12-07T10:30:00+01:00"}, "confirm": "default"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["timeline"], 3);
    assert_eq!(answer.body["backup"], "20261207-090000F");
    let argv = calls_of(&app, "restore.yml")
        .pop()
        .expect("restore.yml ran");
    let inputs: Value = serde_json::from_str(argv.last().unwrap()).unwrap();
    assert_eq!(
        inputs["pgbackrest_restore"],
        json!({"type": "time", "target": "2026-12-07T09:30:00.000000Z"})
    );
    assert!(inputs["postgresql_version"].is_u64(), "{inputs}");
    let job = app
        .get(&format!(
            "/jobs/{}",
            answer.body["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job.body["kind"], "cluster.restore");
}
