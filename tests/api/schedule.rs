//! Backup schedules: `PUT/GET/DELETE /backup-schedule`, kept in the job
//! store across restarts, the scheduler catching up at start-up on the fire
//! times missed while the server was down (the server binary, stopped and
//! started again on the same data directory, with the fake tools), and its
//! ticks run with a clock of the test's (the application in-process).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use pgcluster_api::cluster::App;
use pgcluster_api::cluster::backup::run_due;
use pgcluster_api::config::Config;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tower::ServiceExt;

use crate::helpers::*;
use crate::server_process::ServerProcess;

/// Terraform's outputs for a stack with a backup repository.
const OUTPUTS_WITH_BACKUPS: &str = r#"{
  "bastion_eip_address": {"sensitive": false, "type": "string", "value": "203.0.113.10"},
  "primary_db_addr": {"sensitive": false, "type": "string", "value": "10.0.1.10"},
  "replica_db_addresses": {"sensitive": false, "type": ["list", "string"], "value": ["10.0.2.11"]},
  "ssh_user": {"sensitive": false, "type": "string", "value": "ubuntu"},
  "backup_repository": {"sensitive": false, "type": "object", "value": {"type": "posix", "path": "/srv/backups"}}
}"#;

/// What backup.yml writes as its result.
const BACKUP_RESULT: &str = r#"{"label": "20261123-010000F", "type": "full", "leader": "primary1",
    "started_at": "2026-11-23T01:00:00Z", "stopped_at": "2026-11-23T01:00:05Z",
    "database_bytes": 31000000, "repository_bytes": 4000000}"#;

fn refused(answer: &Answer, field: &str, reason: &str) {
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let said = answer.body["fields"][field].as_str().unwrap_or_default();
    assert!(said.contains(reason), "{field}: {:?}", answer.body);
    assert!(
        answer.body["error"].as_str().unwrap().contains(field),
        "{:?}",
        answer.body
    );
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_each_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    for (body, field, reason) in [
        (json!({}), "full", "is required"),
        (json!({"diff": "0 1 * * *"}), "full", "is required"),
        (json!({"full": "0 0 1 * * *"}), "full", "seconds"),
        (json!({"full": "0 1 * *"}), "full", "5 fields"),
        (json!({"full": 7}), "full", "must be a string"),
        (
            json!({"full": "0 1 * * 0", "diff": "0 25 * * *"}),
            "diff",
            "not a valid cron expression",
        ),
        (
            json!({"full": "0 1 * * 0", "incr": "*/5 * * * * *"}),
            "incr",
            "seconds",
        ),
        (
            json!({"full": "0 1 * * 0", "timezone": "Europe/Pariss"}),
            "timezone",
            "IANA",
        ),
        (
            json!({"full": "0 1 * * 0", "timezone": 1}),
            "timezone",
            "must be a string",
        ),
        (json!({"full": "0 0 31 2 *"}), "full", "never fires"),
    ] {
        let answer = app.put("/backup-schedule", body.clone()).await;
        refused(&answer, field, reason);
        assert_eq!(app.get("/backup-schedule").await.status, 404, "{body}");
    }
    // Several at once, each named.
    let answer = app
        .put(
            "/backup-schedule",
            json!({"full": "61 * * * *", "diff": "x", "timezone": "Mars"}),
        )
        .await;
    assert_eq!(answer.status, 400);
    let fields = answer.body["fields"].as_object().unwrap();
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        ["diff", "full", "timezone"]
    );
    // An unknown field, and bodies that are not an object.
    let unknown = app
        .put(
            "/backup-schedule",
            json!({"full": "0 1 * * 0", "weekly": "0 1 * * 0"}),
        )
        .await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    assert!(
        unknown.body["error"].as_str().unwrap().contains("weekly"),
        "{:?}",
        unknown.body
    );
    for body in [json!(null), json!(["0 1 * * 0"]), json!("0 1 * * 0")] {
        let answer = app.put("/backup-schedule", body).await;
        assert_eq!(answer.status, 400, "{:?}", answer.body);
    }
    assert_eq!(app.get("/backup-schedule").await.status, 404);

    // A refusal leaves a schedule that exists as it was.
    let saved = app
        .put("/backup-schedule", json!({"full": "0 1 * * 0"}))
        .await;
    assert_eq!(saved.status, 200, "{:?}", saved.body);
    let answer = app
        .put(
            "/backup-schedule",
            json!({"full": "0 1 * * 0", "incr": "often"}),
        )
        .await;
    refused(&answer, "incr", "5 fields");
    let now = app.get("/backup-schedule").await;
    assert_eq!(now.body["full"], "0 1 * * 0");
    assert!(now.body.get("incr").is_none(), "{:?}", now.body);
    assert_eq!(now.body["saved_at"], saved.body["saved_at"]);
}

#[tokio::test]
async fn a_schedule_round_trips_through_put_get_and_delete_per_workspace() {
    let app = spawn_app().await;
    let body = json!({"full": "0 1 * * SUN", "diff": "0 1 * * 3", "incr": "@daily",
        "timezone": "Europe/Paris"});
    let put = app.put("/backup-schedule", body).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    for (key, value) in [
        ("workspace", "default"),
        ("full", "0 1 * * SUN"),
        ("diff", "0 1 * * 3"),
        ("incr", "@daily"),
        ("timezone", "Europe/Paris"),
    ] {
        assert_eq!(put.body[key], value, "{:?}", put.body);
    }
    // The next fire times, in the schedule's zone.
    for kind in ["full", "diff", "incr"] {
        let next = put.body["next_runs"][kind].as_str().unwrap();
        let at = OffsetDateTime::parse(next, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{kind}: {next}: {e}"));
        assert!(at > OffsetDateTime::now_utc(), "{next}");
        assert!(
            next.ends_with("+01:00") || next.ends_with("+02:00"),
            "{next}"
        );
        assert!(next.contains("T01:00:00") || kind == "incr", "{next}");
    }
    assert_eq!(put.body["last_runs"], json!([]));
    assert_eq!(put.body["pending"], Value::Null);
    assert_eq!(put.body["last_error"], Value::Null);
    let got = app.get("/backup-schedule").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, put.body);

    // Replaced whole: a type left out is gone, the zone is UTC again.
    let replaced = app
        .put("/backup-schedule", json!({"full": "30 2 * * *"}))
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.body["timezone"], "UTC");
    assert!(replaced.body.get("diff").is_none());
    assert!(replaced.body["next_runs"].get("incr").is_none());
    assert!(
        replaced.body["next_runs"]["full"]
            .as_str()
            .unwrap()
            .ends_with("T02:30:00Z")
    );

    // Each workspace has its own.
    let created = app.post("/workspaces", json!({"name": "staging"})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        app.get("/workspaces/staging/backup-schedule").await.status,
        404
    );
    let staging = app
        .put(
            "/workspaces/staging/backup-schedule",
            json!({"full": "0 4 * * 6"}),
        )
        .await;
    assert_eq!(staging.status, 200, "{:?}", staging.body);
    assert_eq!(staging.body["workspace"], "staging");
    assert_eq!(app.get("/backup-schedule").await.body["full"], "30 2 * * *");

    let deleted = app.delete("/backup-schedule").await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(app.get("/backup-schedule").await.status, 404);
    assert_eq!(app.delete("/backup-schedule").await.status, 404);
    assert_eq!(
        app.get("/workspaces/staging/backup-schedule").await.body["full"],
        "0 4 * * 6"
    );

    // A deleted workspace takes its schedule along.
    assert_eq!(app.delete("/workspaces/staging").await.status, 200);
    assert_eq!(
        app.post("/workspaces", json!({"name": "staging"}))
            .await
            .status,
        201
    );
    assert_eq!(
        app.get("/workspaces/staging/backup-schedule").await.status,
        404
    );
}

#[tokio::test]
async fn a_workspace_that_does_not_exist_has_no_schedule_to_set_read_or_delete() {
    let app = spawn_app().await;
    let path = "/workspaces/nowhere/backup-schedule";
    let put = app.put(path, json!({"full": "0 1 * * 0"})).await;
    assert_eq!(put.status, 404, "{:?}", put.body);
    assert!(put.body["error"].as_str().unwrap().contains("nowhere"));
    assert_eq!(app.get(path).await.status, 404);
    assert_eq!(app.delete(path).await.status, 404);
    let bad_name = app
        .put(
            "/workspaces/No_Such/backup-schedule",
            json!({"full": "0 1 * * 0"}),
        )
        .await;
    assert_eq!(bad_name.status, 400, "{:?}", bad_name.body);
    assert!(!app.data_dir.join("workspaces/nowhere").exists());
}

/// The server binary on `root`, answering the requests of these tests.
struct Server(ServerProcess);

impl Server {
    async fn start(root: &Path, scheduler_seconds: &str) -> Server {
        Server(ServerProcess::start(root, &[("BACKUP_SCHEDULER_SECONDS", scheduler_seconds)]).await)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .0
            .client
            .request(method, format!("{}{path}", self.0.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// The backup jobs, newest first.
    async fn backups(&self) -> Vec<Value> {
        let (_, page) = self.get("/jobs?kind=cluster.backup").await;
        page["jobs"].as_array().unwrap().clone()
    }

    /// SIGTERM, and the wait for its end.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.child.id().to_string())
            .status();
        self.0.child.wait().unwrap();
    }
}

/// The body of a configure that gives `default` a backup repository (key
/// files, terraform's outputs), with the fake playbook writing a backup's
/// result.
fn configure_with_backups(root: &Path) -> Value {
    let fake = root.join("fake");
    std::fs::write(fake.join("outputs"), OUTPUTS_WITH_BACKUPS).unwrap();
    std::fs::write(fake.join("operation_result"), BACKUP_RESULT).unwrap();
    let mut body = json!({});
    for (field, file) in [
        ("bastion_key_path", "bastion.pem"),
        ("db_key_path", "db.pem"),
    ] {
        let path = root.join(file);
        std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        body[field] = json!(path);
    }
    body
}

/// A yearly, a monthly and a daily expression that fire at an hour twelve
/// hours away from now, the yearly one six months away: none fires while a
/// test runs, each has fired in the last year, and in the day to come only
/// the daily one fires.
fn far_from_now() -> (String, String, String) {
    let now = OffsetDateTime::now_utc();
    let hour = (now.hour() + 12) % 24;
    let month = (u8::from(now.month()) + 5) % 12 + 1;
    (
        format!("0 {hour} 1 {month} *"),
        format!("0 {hour} 1 * *"),
        format!("0 {hour} * * *"),
    )
}

/// What the server stopped would find after `days` days down: the
/// schedules were last considered that long ago.
fn as_if_down_for(root: &Path, days: i64) {
    let store = rusqlite::Connection::open(root.join("data/jobs.db")).unwrap();
    let then = OffsetDateTime::now_utc() - time::Duration::days(days);
    let ms = (then.unix_timestamp_nanos() / 1_000_000) as i64;
    let changed = store
        .execute("UPDATE backup_schedules SET considered_at = ?1", [ms])
        .unwrap();
    assert!(changed > 0, "no schedule stored");
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(found) = check().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn runs_missed_while_the_server_was_down_make_one_backup_of_the_largest_type() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (full, diff, incr) = far_from_now();
    let schedule = json!({"full": full, "diff": diff, "incr": incr});

    let server = Server::start(root, "0").await;
    let (status, answer) = server
        .post("/ansible/configure", configure_with_backups(root))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, saved) = server.put("/backup-schedule", schedule.clone()).await;
    assert_eq!(status, 200, "{saved}");
    server.stop();
    // Down for 400 days: every type missed at least once, the daily one
    // 400 times.
    as_if_down_for(root, 400);

    let server = Server::start(root, "1").await;
    let job = wait_for("the scheduled backup", async || {
        server.backups().await.pop()
    })
    .await;
    let id = job["id"].as_str().unwrap().to_string();
    let job = wait_for("the backup's end", async || {
        let (_, job) = server.get(&format!("/jobs/{id}")).await;
        job["finished_at"].is_string().then_some(job)
    })
    .await;
    assert_eq!(job["kind"], "cluster.backup");
    assert_eq!(job["started_by"], "scheduler");
    assert_eq!(job["request"]["type"], "full", "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["label"], "20261123-010000F");

    // Two more ticks: still that one backup.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let backups = server.backups().await;
    assert_eq!(backups.len(), 1, "{backups:#?}");

    // The schedule survived the restart, and shows the run.
    let (status, now) = server.get("/backup-schedule").await;
    assert_eq!(status, 200, "{now}");
    for key in ["full", "diff", "incr", "timezone", "saved_at"] {
        assert_eq!(now[key], saved[key], "{key}");
    }
    assert_eq!(now["last_runs"].as_array().unwrap().len(), 1, "{now}");
    let run = &now["last_runs"][0];
    assert_eq!(run["type"], "full");
    assert_eq!(run["job_id"], id.as_str());
    assert_eq!(run["status"], "succeeded");
    assert_eq!(now["pending"], Value::Null);
    assert_eq!(now["last_error"], Value::Null);
    server.stop();
}

#[tokio::test]
async fn a_missed_run_the_server_refuses_is_recorded_as_the_last_error_and_not_retried() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (_, _, daily) = far_from_now();

    // No inventory: backups cannot start.
    let server = Server::start(root, "0").await;
    let (status, answer) = server.put("/backup-schedule", json!({"full": daily})).await;
    assert_eq!(status, 200, "{answer}");
    server.stop();
    as_if_down_for(root, 2);

    let server = Server::start(root, "1").await;
    let error = wait_for("the refusal", async || {
        let (_, schedule) = server.get("/backup-schedule").await;
        schedule["last_error"]
            .is_object()
            .then_some(schedule["last_error"].clone())
    })
    .await;
    assert_eq!(error["type"], "full", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("no inventory"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, schedule) = server.get("/backup-schedule").await;
    assert_eq!(schedule["last_error"], error, "not tried again");
    assert_eq!(schedule["pending"], Value::Null);
    assert_eq!(schedule["last_runs"], json!([]));
    assert!(server.backups().await.is_empty());
    server.stop();
}

/// A request to the application's router; the answer's status and body.
async fn call(router: &Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let request = Request::builder().method(method).uri(path);
    let request = match body {
        Some(body) => {
            let body = body.to_string();
            request
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .body(Body::from(body))
        }
        None => request.body(Body::empty()),
    };
    let response = router.clone().oneshot(request.unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_backup_due_while_the_workspace_is_busy_waits_and_starts_once_it_is_free() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let config = Config::from_vars(test_vars(root, Tools::Fake)).unwrap();
    let app = App::new(config).unwrap();
    let router = pgcluster_api::startup::router(app.clone());
    let (status, answer) = call(
        &router,
        "POST",
        "/ansible/configure",
        Some(configure_with_backups(root)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (yearly, _, daily) = far_from_now();
    let (status, answer) = call(
        &router,
        "PUT",
        "/backup-schedule",
        Some(json!({"full": yearly, "incr": daily})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let backups = async || {
        let (_, page) = call(&router, "GET", "/jobs?kind=cluster.backup", None).await;
        page["jobs"].as_array().unwrap().clone()
    };
    let schedule = async || call(&router, "GET", "/backup-schedule", None).await.1;

    // A playbook run holds the workspace for a while.
    std::fs::write(root.join("fake/sleep"), "5").unwrap();
    let (status, run) = call(
        &router,
        "POST",
        "/ansible/run",
        Some(json!({"async": true})),
    )
    .await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["job_id"].as_str().unwrap().to_string();

    // A day later (by the test's clock) the daily incremental is due: it
    // waits, on this tick and the next.
    let day = OffsetDateTime::now_utc() + time::Duration::days(1);
    run_due(&app, day).await;
    assert_eq!(schedule().await["pending"], "incr");
    run_due(&app, day + Duration::from_secs(15)).await;
    assert_eq!(schedule().await["pending"], "incr");
    assert!(backups().await.is_empty(), "nothing started while busy");

    // Free again: it starts, once.
    wait_for("the playbook's end", async || {
        let (_, job) = call(&router, "GET", &format!("/jobs/{run_id}"), None).await;
        job["finished_at"].is_string().then_some(())
    })
    .await;
    std::fs::remove_file(root.join("fake/sleep")).unwrap();
    run_due(&app, day + Duration::from_secs(30)).await;
    let started = backups().await;
    assert_eq!(started.len(), 1, "{started:#?}");
    assert_eq!(started[0]["started_by"], "scheduler");
    assert_eq!(started[0]["request"]["type"], "incr");
    let now = schedule().await;
    assert_eq!(now["pending"], Value::Null);
    assert_eq!(now["last_runs"][0]["job_id"], started[0]["id"]);
    run_due(&app, day + Duration::from_secs(45)).await;
    assert_eq!(backups().await.len(), 1, "not started twice");
}
