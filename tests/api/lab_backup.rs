//! Backups and point-in-time recovery on the lab cluster built by the
//! end-to-end test (archiving is on: the lab stack outputs a repository):
//! a full backup; rows A, a time T, rows B, the table dropped; a restore to
//! T through the API brings back rows A only, on the leader and on every
//! replica, all streaming on a new timeline; an incremental backup works
//! after it; after a switchover a backup is taken on, and archiving runs
//! from, the new leader; a schedule fires a backup the server starts itself.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Timer;
use super::ha::{local_psql, within};
use crate::helpers::TestApp;

/// Each member's name and address, from `/cluster`.
fn members(cluster: &Value) -> Vec<(String, String)> {
    cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["address"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The last lines of a job's log, for a failure's message.
async fn log_tail(app: &TestApp, id: &str) -> String {
    let log = app.get(&format!("/jobs/{id}/log?limit=100000")).await.body;
    let lines: Vec<&str> = log["lines"]
        .as_array()
        .map(|l| l.iter().filter_map(|l| l["text"].as_str()).collect())
        .unwrap_or_default();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Waits up to 15 minutes for a job to end (a restore re-clones every
/// replica).
async fn wait_long(app: &TestApp, id: &str) -> Value {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(900) {
        let job = app.get(&format!("/jobs/{id}")).await.body;
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("job {id} did not end");
}

pub async fn backup_and_restore(app: &TestApp, t: &mut Timer) {
    let cluster = t.step("/cluster before backups", app.get("/cluster")).await;
    assert_eq!(cluster.body["healthy"], true, "{:?}", cluster.body);
    assert_eq!(cluster.body["archiving"]["ok"], true, "{:?}", cluster.body);
    let leader = cluster.body["leader"].as_str().unwrap().to_string();
    let timeline = cluster.body["timeline"].as_u64().unwrap();
    let all = members(&cluster.body);
    let address = |name: &str| -> String {
        all.iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
            .unwrap()
    };

    // Bad input changes nothing and names its field.
    let bad = app.post("/backups", json!({"type": "weekly"})).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(bad.body["fields"]["type"].is_string(), "{:?}", bad.body);
    let bad = app.post("/restore", json!({"target": "latest"})).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(bad.body["fields"]["confirm"].is_string(), "{:?}", bad.body);
    let bad = app
        .post(
            "/restore",
            json!({"target": {"time": "yesterday"}, "confirm": "default"}),
        )
        .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(
        bad.body["fields"]["target.time"].is_string(),
        "{:?}",
        bad.body
    );

    let full = t
        .step(
            "backup (full)",
            app.post("/backups", json!({"type": "full"})),
        )
        .await;
    let full_label = full.body["label"].as_str().unwrap().to_string();
    assert!(full_label.ends_with('F'), "{:?}", full.body);
    assert_eq!(full.body["type"], "full");
    assert_eq!(full.body["leader"], leader.as_str());

    // Rows A, the time T, rows B, then the mistake.
    let on_leader = address(&leader);
    let (ok, out) = local_psql(
        &on_leader,
        "CREATE TABLE pitr (id int PRIMARY KEY, tag text); \
         INSERT INTO pitr SELECT g, 'A' FROM generate_series(1, 100) g",
        10,
    );
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let target = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, out) = local_psql(
        &on_leader,
        "INSERT INTO pitr SELECT g, 'B' FROM generate_series(101, 150) g",
        10,
    );
    assert!(ok, "{out}");
    let (ok, out) = local_psql(&on_leader, "DROP TABLE pitr", 10);
    assert!(ok, "{out}");

    // Outside the window, or an unknown backup: refused, nothing runs.
    let early = app
        .post(
            "/restore",
            json!({"target": {"time": "2020-01-01T00:00:00Z"}, "confirm": "default"}),
        )
        .await;
    assert_eq!(early.status, 409, "{:?}", early.body);
    assert!(
        early.body["error"]
            .as_str()
            .unwrap()
            .contains("outside the recovery window"),
        "{:?}",
        early.body
    );
    let unknown = app
        .post(
            "/restore",
            json!({"target": {"backup": "20200101-000000F"}, "confirm": "default"}),
        )
        .await;
    assert_eq!(unknown.status, 409, "{:?}", unknown.body);
    assert!(
        unknown.body["error"]
            .as_str()
            .unwrap()
            .contains(&full_label),
        "the refusal lists the labels: {:?}",
        unknown.body
    );

    let started = Instant::now();
    let restore = app
        .post(
            "/restore",
            json!({"target": {"time": target}, "confirm": "default", "async": true}),
        )
        .await;
    assert_eq!(restore.status, 202, "{:?}", restore.body);
    let id = restore.body["job_id"].as_str().unwrap().to_string();
    let job = wait_long(app, &id).await;
    let took = started.elapsed().as_secs_f64();
    t.0.push(("restore to a time".into(), took));
    eprintln!("e2e restore to a time: {took:.1}s");
    assert_eq!(
        job["status"],
        "succeeded",
        "{job}\n{}",
        log_tail(app, &id).await
    );
    assert_eq!(job["kind"], "cluster.restore");
    let result = &job["result"];
    assert_eq!(result["backup"], full_label.as_str(), "{result}");
    let new_timeline = result["timeline"].as_u64().unwrap();
    assert!(new_timeline > timeline, "{result}");

    // Rows A and only them, on every member.
    for (name, member) in &all {
        let mut seen = String::new();
        let caught_up = within(Duration::from_secs(120), || {
            seen = local_psql(
                member,
                "SELECT count(*) FILTER (WHERE tag = 'A') || '|' || \
                 count(*) FILTER (WHERE tag = 'B') FROM pitr",
                5,
            )
            .1;
            seen == "100|0"
        })
        .await;
        assert!(caught_up.is_some(), "{name}: rows A only, saw {seen:?}");
    }
    let after = t
        .step("/cluster after the restore", app.get("/cluster"))
        .await;
    assert_eq!(after.body["healthy"], true, "{:?}", after.body);
    assert_eq!(after.body["timeline"], new_timeline, "{:?}", after.body);
    let on_timeline = after.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["timeline"] == new_timeline);
    assert!(
        on_timeline,
        "every member on the new timeline: {:?}",
        after.body
    );
    assert_eq!(
        after.body["replicas"].as_array().unwrap().len(),
        all.len() - 1
    );
    assert_eq!(after.body["archiving"]["ok"], true, "{:?}", after.body);

    let incr = t
        .step(
            "backup (incr after the restore)",
            app.post("/backups", json!({})),
        )
        .await;
    assert_eq!(incr.body["type"], "incr", "{:?}", incr.body);

    // A switchover: the next backup and archiving follow the new leader.
    // In synchronous mode only the synchronous standby may take over.
    let after_members = after.body["members"].as_array().unwrap();
    let candidate = after_members
        .iter()
        .find(|m| m["role"] == "sync_standby")
        .or_else(|| after_members.iter().find(|m| m["role"] == "replica"))
        .and_then(|m| m["name"].as_str())
        .unwrap()
        .to_string();
    t.step(
        "switchover before a backup",
        app.post("/cluster/switchover", json!({"candidate": candidate})),
    )
    .await;
    let diff = t
        .step(
            "backup (diff after a switchover)",
            app.post("/backups", json!({"type": "diff"})),
        )
        .await;
    assert_eq!(diff.body["leader"], candidate.as_str(), "{:?}", diff.body);
    assert_eq!(diff.body["type"], "diff");
    let listed = t.step("list backups", app.get("/backups")).await;
    let labels: Vec<&str> = listed.body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    for taken in [&full, &incr, &diff] {
        assert!(
            labels.contains(&taken.body["label"].as_str().unwrap()),
            "{labels:?}"
        );
    }
    assert_eq!(listed.body["archiving"]["ok"], true, "{:?}", listed.body);
    assert_eq!(listed.body["archiving"]["member"], candidate.as_str());
    let window = &listed.body["recovery_window"];
    assert!(
        window["earliest"].is_string() && window["latest"].is_string(),
        "{window}"
    );

    scheduled_backup(app, t).await;
}

/// A schedule firing every minute: the server starts the backup itself.
async fn scheduled_backup(app: &TestApp, t: &mut Timer) {
    let put = app
        .client
        .put(format!("{}/backup-schedule", app.address))
        .json(&json!({"full": "0 3 1 1 *", "incr": "* * * * *", "timezone": "UTC"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200, "{:?}", put.text().await);
    let started = Instant::now();
    let mut found = None;
    while found.is_none() && started.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let jobs = app.get("/jobs?kind=cluster.backup").await.body;
        found = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["started_by"] == "scheduler")
            .and_then(|j| j["id"].as_str())
            .map(String::from);
    }
    let id = found.expect("the schedule started a backup within 3 minutes");
    let job = wait_long(app, &id).await;
    t.0.push(("scheduled backup".into(), started.elapsed().as_secs_f64()));
    assert_eq!(
        job["status"],
        "succeeded",
        "{job}\n{}",
        log_tail(app, &id).await
    );
    assert_eq!(job["request"]["type"], "incr", "{job}");
    let label = job["result"]["label"].as_str().unwrap().to_string();
    let deleted = app
        .client
        .delete(format!("{}/backup-schedule", app.address))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{:?}", deleted.status());
    let listed = app.get("/backups").await;
    assert!(
        listed.body["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["label"] == label.as_str()),
        "{:?}",
        listed.body
    );
}
