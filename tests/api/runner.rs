//! The runner: process groups, timeouts, detached jobs, the workspace lock.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn no_process_of_a_job_outlives_it() {
    let app = spawn_app().await;
    app.fake("grandchild", "");
    let answer = app.post_empty("/terraform/init").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let grandchild: i32 = std::fs::read_to_string(app.last_call().join("grandchild_pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild held the pipes open; the runner killed the group.
    for _ in 0..50 {
        if !alive(grandchild) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("grandchild {grandchild} survived its job");
}

#[tokio::test]
async fn a_job_past_its_timeout_is_stopped_with_its_whole_group() {
    let app = spawn_app_with(AppOptions {
        vars: vec![
            ("JOB_TIMEOUT_SECS", "1".into()),
            ("CANCEL_GRACE_SECS", "1".into()),
        ],
        ..AppOptions::default()
    })
    .await;
    app.fake("sleep", "60");
    app.fake("grandchild", "");
    let started = std::time::Instant::now();
    let answer = app.post_empty("/terraform/init").await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "timed_out");
    assert!(
        answer.body["details"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s")
    );
    // SIGINT is ignored by the fake: SIGKILL after the grace period ended it.
    assert!(started.elapsed() < Duration::from_secs(30));
    let call = app.last_call();
    for file in ["pid", "grandchild_pid"] {
        let pid: i32 = std::fs::read_to_string(call.join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "{file} {pid} survived the timeout");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_stop_the_job() {
    let app = spawn_app().await;
    app.fake("sleep", "2");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let result = impatient
        .post(format!("{}/terraform/init", app.address))
        .send()
        .await;
    assert!(result.is_err(), "the client gave up");
    let jobs = app.get("/jobs").await.body;
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let log = app.get(&format!("/jobs/{id}/log")).await.body.to_string();
    assert!(
        log.contains("fake terraform init done"),
        "ran to its end: {log}"
    );
}

#[tokio::test]
async fn a_second_mutating_job_on_the_workspace_gets_409_naming_the_first() {
    let app = spawn_app().await;
    app.fake("sleep", "3");
    let first = app.post("/terraform/plan", json!({"async": true})).await;
    assert_eq!(first.status, 202);
    let id = first.body["job_id"].as_str().unwrap();
    let second = app.post_empty("/terraform/init").await;
    assert_eq!(second.status, 409, "{:?}", second.body);
    assert_eq!(second.body["job_id"], id);
    assert!(second.headers.contains_key("retry-after"));
    let generate = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "k", "db_key_pair": "k"}),
        )
        .await;
    assert_eq!(
        generate.status, 409,
        "files are not rewritten under a running job"
    );
    app.wait_for_job(id).await;
    assert_eq!(app.post_empty("/terraform/init").await.status, 200);
}

#[tokio::test]
async fn a_cancelled_job_ends_cancelled_with_its_group_killed() {
    let app = spawn_app().await;
    app.fake("sleep", "60");
    let started = app.post("/terraform/apply", json!({"async": true})).await;
    // No plan yet: apply is refused; use plan, which also mutates.
    assert_eq!(started.status, 409);
    let started = app.post("/terraform/plan", json!({"async": true})).await;
    let id = started.body["job_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancel = app.post_empty(&format!("/jobs/{id}/cancel")).await;
    assert_eq!(cancel.status, 200, "{:?}", cancel.body);
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "cancelled");
    let pid: i32 = std::fs::read_to_string(app.last_call().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid));
    let again = app.post_empty(&format!("/jobs/{id}/cancel")).await;
    assert_eq!(again.status, 409);
}

#[tokio::test]
async fn very_long_lines_are_cut_with_a_marker() {
    let app = spawn_app_with(AppOptions {
        vars: vec![("JOB_LOG_MAX_LINE_BYTES", "64".into())],
        ..AppOptions::default()
    })
    .await;
    app.fake("bytes", "1000");
    let answer = app.post("/terraform/init", json!({"async": true})).await;
    let id = answer.body["job_id"].as_str().unwrap().to_string();
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "succeeded");
    let log = app.get(&format!("/jobs/{id}/log")).await.body;
    let cut: Vec<&Value> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["text"]
                .as_str()
                .unwrap()
                .ends_with("[line cut at 64 bytes]")
        })
        .collect();
    assert_eq!(cut.len(), 10, "ten 100-byte lines, each cut: {log}");
    assert!(
        cut.iter()
            .all(|l| l["text"].as_str().unwrap().len() == 64 + " [line cut at 64 bytes]".len())
    );
}

/// A tool killed from outside (an operator, the OOM killer) ends its job
/// `failed`, the signal named, and frees the workspace.
#[tokio::test]
async fn a_tool_killed_from_outside_fails_its_job_naming_the_signal() {
    let app = spawn_app().await;
    app.fake("sleep", "60");
    let started = app.post("/terraform/init", json!({"async": true})).await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    let id = started.body["job_id"].as_str().unwrap().to_string();
    let mut pid = None;
    for _ in 0..100 {
        pid = app.get(&format!("/jobs/{id}")).await.body["pid"].as_i64();
        if pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = pid.expect("the job records its tool's pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"], "killed by signal 9 (SIGKILL)", "{job}");
    app.unfake("sleep");
    assert_eq!(app.post_empty("/terraform/init").await.status, 200);
}
