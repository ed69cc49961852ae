//! Durable jobs: live events over SSE, log caps, secrets masked in logs,
//! idle timeouts, the lock under concurrent requests.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ansible::configured_app;
use crate::helpers::*;

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Reads events until the `end` event (or `max` events); returns them all.
pub async fn read_events(
    client: &reqwest::Client,
    url: &str,
    last_event_id: Option<u64>,
    max: usize,
) -> Vec<SseEvent> {
    let mut request = client.get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let mut response = request.send().await.expect("events request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), response.chunk())
        .await
        .expect("an event within a minute")
        .expect("stream readable")
    {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut fields: HashMap<&str, String> = HashMap::new();
            for line in block.lines() {
                if let Some((key, value)) = line.split_once(':') {
                    fields.insert(key, value.strip_prefix(' ').unwrap_or(value).to_string());
                }
            }
            let Some(data) = fields.get("data") else {
                continue;
            }; // heartbeat comments
            let event = SseEvent {
                id: fields.get("id").cloned(),
                event: fields
                    .get("event")
                    .cloned()
                    .unwrap_or_else(|| "message".into()),
                data: data.clone(),
            };
            let done = event.event == "end";
            events.push(event);
            if done || events.len() >= max {
                return events;
            }
        }
    }
    events
}

fn line_numbers(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.event == "line")
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn several_followers_see_every_line_once_and_the_final_status() {
    let app = spawn_app().await;
    app.fake("sleep", "2");
    let started = app.post("/terraform/init", json!({"async": true})).await;
    let id = started.body["job_id"].as_str().unwrap().to_string();
    let url = format!("{}/jobs/{id}/events", app.address);
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let client = app.client.clone();
            let url = url.clone();
            tokio::spawn(async move { read_events(&client, &url, None, usize::MAX).await })
        })
        .collect();
    let mut seen = Vec::new();
    for follower in followers {
        seen.push(follower.await.unwrap());
    }
    let stored = app.get(&format!("/jobs/{id}/log?limit=10000")).await.body["lines"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(stored > 5, "the fake printed while it ran");
    for events in &seen {
        assert_eq!(
            line_numbers(events),
            (1..=stored).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
        let end = events.last().unwrap();
        assert_eq!(end.event, "end");
        let job: Value = serde_json::from_str(&end.data).unwrap();
        assert_eq!(job["status"], "succeeded");
    }
    // After the end, a new follower gets the whole replay and the end.
    let late = read_events(&app.client, &url, None, usize::MAX).await;
    assert_eq!(line_numbers(&late), (1..=stored).collect::<Vec<_>>());
    assert_eq!(late.last().unwrap().event, "end");
}

/// Follows a job's events to its `end`, checking as it goes that the line
/// numbers run after, after + 1, ... without a gap or a repeat; returns the
/// last number seen.
async fn follow_checking_numbers(client: reqwest::Client, url: String, after: u64) -> u64 {
    let mut response = client
        .get(&url)
        .header("Last-Event-ID", after.to_string())
        .send()
        .await
        .expect("events request");
    assert_eq!(response.status(), 200);
    let mut buffer = String::new();
    let mut last = after;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), response.chunk())
        .await
        .expect("an event within a minute")
        .expect("stream readable")
    {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.contains("event: end") {
                return last;
            }
            if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id: ")) {
                let n: u64 = id.parse().unwrap();
                assert_eq!(n, last + 1, "line {n} after line {last}");
                last = n;
            }
        }
    }
    panic!("the stream ended without an end event after line {last}");
}

#[tokio::test]
async fn followers_connecting_all_through_a_fast_job_see_every_line_once_in_order() {
    let app = spawn_app().await;
    app.fake("lines", "20000");
    let started = app.post("/terraform/init", json!({"async": true})).await;
    let id = started.body["job_id"].as_str().unwrap().to_string();
    let url = format!("{}/jobs/{id}/events", app.address);
    let mut followers = Vec::new();
    for i in 0..12u64 {
        // Some from the start, some from a line number on.
        let after = if i % 2 == 0 { 0 } else { i * 37 };
        let client = app.client.clone();
        let url = url.clone();
        followers.push(tokio::spawn(async move {
            (after, follow_checking_numbers(client, url, after).await)
        }));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let mut lasts = Vec::new();
    for follower in followers {
        lasts.push(follower.await.unwrap().1);
    }
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "succeeded");
    // Every line the job stored: the fake's own lines and the 20,000.
    let tail = app.get(&format!("/jobs/{id}/log?after=20000")).await.body;
    let stored = tail["next_after"].as_u64().unwrap();
    assert!(stored > 20_000, "{tail}");
    assert!(
        lasts.iter().all(|&last| last == stored),
        "{lasts:?} != {stored}"
    );
}

#[tokio::test]
async fn a_follower_reconnecting_with_last_event_id_gets_no_duplicate_and_no_gap() {
    let app = spawn_app().await;
    app.fake("sleep", "3");
    let started = app.post("/terraform/init", json!({"async": true})).await;
    let id = started.body["job_id"].as_str().unwrap().to_string();
    let url = format!("{}/jobs/{id}/events", app.address);
    // Read a few lines while the job runs, then drop the connection.
    let first = read_events(&app.client, &url, None, 4).await;
    let mut numbers = line_numbers(&first);
    let last = *numbers.last().unwrap();
    let rest = read_events(&app.client, &url, Some(last), usize::MAX).await;
    numbers.extend(line_numbers(&rest));
    assert_eq!(rest.last().unwrap().event, "end");
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "succeeded");
    let stored = app.get(&format!("/jobs/{id}/log?limit=10000")).await.body["lines"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert_eq!(numbers, (1..=stored).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_bad_last_event_id_is_a_400() {
    let app = spawn_app().await;
    let started = app.post("/terraform/init", json!({"async": true})).await;
    let id = started.body["job_id"].as_str().unwrap();
    let response = app
        .client
        .get(format!("{}/jobs/{id}/events", app.address))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn fifty_simultaneous_plans_run_exactly_one() {
    let app = spawn_app().await;
    app.fake("sleep", "2");
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let client = app.client.clone();
            let url = format!("{}/terraform/plan", app.address);
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"async": true}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    let jobs = app.get("/jobs?kind=terraform.plan").await.body;
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        1,
        "only one job was recorded"
    );
    app.wait_for_job(&id).await;
    assert_eq!(app.calls().len(), 1, "one terraform process started");
}

#[tokio::test]
async fn the_stored_log_is_capped_with_a_marker() {
    let app = spawn_app_with(AppOptions {
        vars: vec![("JOB_LOG_MAX_BYTES", "2000".into())],
        ..AppOptions::default()
    })
    .await;
    app.fake("lines", "5000");
    let answer = app.post_empty("/terraform/init").await;
    assert_eq!(answer.status, 200);
    let id = answer.body["job_id"].as_str().unwrap();
    let lines = app.get(&format!("/jobs/{id}/log?limit=10000")).await.body["lines"]
        .as_array()
        .unwrap()
        .clone();
    assert!(lines.len() < 300, "capped: {}", lines.len());
    let last = lines.last().unwrap();
    assert_eq!(last["stream"], "system");
    assert!(last["text"].as_str().unwrap().contains("log truncated"));
}

#[tokio::test]
async fn a_silent_job_is_stopped_by_the_idle_timeout() {
    let app = spawn_app_with(AppOptions {
        vars: vec![
            ("JOB_IDLE_TIMEOUT_SECS", "1".into()),
            ("CANCEL_GRACE_SECS", "1".into()),
        ],
        ..AppOptions::default()
    })
    .await;
    app.fake("silent", "60");
    let answer = app.post_empty("/terraform/init").await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "timed_out");
    assert!(
        answer.body["details"]
            .as_str()
            .unwrap()
            .contains("no output for 1s")
    );
}

#[tokio::test]
async fn a_secret_printed_by_the_tool_is_masked_in_every_output() {
    let app = configured_app().await;
    app.fake("echo_vault", "");
    // And in lines that repeat, as a real run's do, so their chunk of the
    // stored log is compressed.
    app.fake(
        "print",
        &format!("ok: [primary] => (item={VAULT_PASSWORD})\n").repeat(40),
    );
    let answer = app.post("/ansible/run", json!({"output": true})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let id = answer.body["job_id"].as_str().unwrap().to_string();
    // The fake did print it...
    assert!(
        answer.body["output"]
            .as_str()
            .unwrap()
            .contains("vault password is ********")
    );
    // ...and it is masked in the answer, the stored log and the event stream.
    let log = app.get(&format!("/jobs/{id}/log")).await.body.to_string();
    let events = read_events(
        &app.client,
        &format!("{}/jobs/{id}/events", app.address),
        None,
        usize::MAX,
    )
    .await;
    let events_text: String = events.iter().map(|e| e.data.clone()).collect();
    for (what, text) in [
        ("answer", answer.body.to_string()),
        ("log", log),
        ("events", events_text),
    ] {
        assert!(
            !text.contains(VAULT_PASSWORD),
            "vault password in the {what}"
        );
    }
    let files = snapshot_with_logs(&app.data_dir);
    for (path, bytes) in &files {
        assert!(
            !String::from_utf8_lossy(bytes).contains(VAULT_PASSWORD),
            "{}",
            path.display()
        );
    }
    // The scan reads the stored lines, compressed or not: the masked one is there.
    assert!(
        files.iter().any(|(path, bytes)| {
            path.to_string_lossy().ends_with("log lines")
                && String::from_utf8_lossy(bytes).contains("(item=********)")
        }),
        "{:?}",
        files.keys()
    );
}

#[tokio::test]
async fn jobs_are_listed_newest_first_with_filters_and_cursors() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert_eq!(app.post_empty("/terraform/init").await.status, 200);
    }
    app.fake("fail", "");
    assert_eq!(app.post_empty("/terraform/plan").await.status, 400);
    let all = app.get("/jobs").await.body;
    let jobs = all["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    assert_eq!(jobs[0]["kind"], "terraform.plan");
    let failed = app.get("/jobs?status=failed").await.body;
    assert_eq!(failed["jobs"].as_array().unwrap().len(), 1);
    let page1 = app.get("/jobs?kind=terraform.init&limit=2").await.body;
    assert_eq!(page1["jobs"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(&format!(
            "/jobs?kind=terraform.init&limit=2&cursor={cursor}"
        ))
        .await
        .body;
    assert_eq!(page2["jobs"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());
    assert_eq!(app.get("/jobs?status=exploded").await.status, 400);
    assert_eq!(
        app.get("/jobs?workspace=other").await.body["jobs"],
        json!([])
    );
}

#[tokio::test]
async fn prefer_respond_async_answers_202_like_the_async_option() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/terraform/init", app.address))
        .header("Prefer", "respond-async, wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/jobs/{}", body["job_id"].as_str().unwrap())
    );
    assert_eq!(body["job"]["kind"], "terraform.init");
}

#[tokio::test]
async fn a_job_records_who_started_it() {
    use pgcluster_api::tokens::{Scope, TokenEntry};
    let token = "pgc_ci-token-for-the-started-by-test";
    let app = spawn_app_with(AppOptions {
        vars: vec![(
            "API_TOKENS",
            TokenEntry::for_token("ci", Scope::Apply, token).config_entry(),
        )],
        ..AppOptions::default()
    })
    .await;
    let answer = app.post_as(token, "/terraform/init", json!({})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let id = answer.body["job_id"].as_str().unwrap();
    let job = app.get_as(token, &format!("/jobs/{id}")).await.body;
    assert_eq!(job["started_by"], "ci");
    assert!(!job.to_string().contains(token));
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_requests_jobs_and_log_bytes() {
    let app = spawn_app().await;
    let scrape = |app: &TestApp| {
        let client = app.client.clone();
        let url = format!("{}/metrics", app.address);
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    // The recorder is shared by every app of this test process: compare deltas.
    let before = scrape(&app).await;
    assert_eq!(app.post_empty("/terraform/init").await.status, 200);
    app.fake("sleep", "30");
    let started = app.post("/terraform/plan", json!({"async": true})).await;
    let id = started.body["job_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.post_empty(&format!("/jobs/{id}/cancel")).await.status,
        200
    );
    app.wait_for_job(&id).await;
    let after = scrape(&app).await;
    let delta = |prefix: &str| metric(&after, prefix) - metric(&before, prefix);
    assert!(
        delta("jobs_total{kind=\"terraform.init\",status=\"succeeded\"}") >= 1.0,
        "{after}"
    );
    assert!(delta("job_cancellations_total") >= 1.0, "{after}");
    assert!(delta("job_log_bytes_total") > 0.0, "{after}");
    assert!(
        delta("http_requests_total{route=\"/terraform/init\",method=\"POST\",status=\"200\"}")
            >= 1.0,
        "{after}"
    );
    assert!(
        after.contains("http_request_duration_seconds_bucket"),
        "{after}"
    );
    assert!(after.contains("job_duration_seconds_bucket"), "{after}");
    assert!(after.contains("jobs_running"), "{after}");
}

#[tokio::test]
async fn request_ids_are_returned_recorded_on_jobs_and_made_up_when_unusable() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/terraform/init", app.address))
        .header("x-request-id", "dashboard-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "dashboard-7f3a");
    let body: Value = response.json().await.unwrap();
    let job = app
        .get(&format!("/jobs/{}", body["job_id"].as_str().unwrap()))
        .await
        .body;
    assert_eq!(job["request_id"], "dashboard-7f3a");
    let odd = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", "has spaces and <html>")
        .send()
        .await
        .unwrap();
    let made_up = odd.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(made_up).is_ok(), "{made_up}");
}

#[tokio::test]
async fn cors_answers_only_the_configured_dashboard_origin() {
    let app = spawn_app_with(AppOptions {
        vars: vec![("CORS_ALLOWED_ORIGINS", "https://dashboard.example".into())],
        ..AppOptions::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/jobs", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://dashboard.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://dashboard.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
