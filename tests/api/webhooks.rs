//! Webhooks: a receiver in the test (an HTTP server on 127.0.0.1) records
//! every delivery; each is checked against its HMAC-SHA256 signature, and
//! the receiver can be told to fail a number of times first.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

const SECRET: &str = "whsec-Kq3!unique-never-shown-9f2";

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks the signature with the secret, as a receiver would.
    fn assert_signed_with(&self, secret: &str) {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(self.header("x-pgcluster-signature"), expected);
    }
}

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    /// Answers 500 this many times before answering 200.
    failures: Arc<AtomicU32>,
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            ..Receiver::default()
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        receiver
    }

    fn fail(&self, times: u32) {
        self.failures.store(times, Ordering::SeqCst);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (up to 20 s) for the deliveries of `event` that `pick` keeps to
    /// number `count`.
    async fn wait_for(
        &self,
        event: &str,
        count: usize,
        pick: impl Fn(&Value) -> bool,
    ) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let got: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.header("x-pgcluster-event") == event && pick(&r.json()))
                .collect();
            if got.len() >= count {
                return got;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{count} {event} not received: {:?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    receiver.received.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
    });
    let failing = receiver
        .failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn create(app: &TestApp, body: Value) -> Value {
    let created = app.post("/webhooks", body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body
}

fn subscribe(receiver: &Receiver, events: &[&str]) -> Value {
    json!({"url": receiver.url, "events": events, "secret": SECRET})
}

/// A terraform init through the API; its job id.
async fn run_job(app: &TestApp) -> String {
    let init = app.post_empty("/terraform/init").await;
    assert_eq!(init.status, 200, "{:?}", init.body);
    init.body["job_id"].as_str().unwrap().to_string()
}

async fn deliveries(app: &TestApp, webhook: &str) -> Vec<Value> {
    let answer = app.get(&format!("/webhooks/{webhook}/deliveries")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["deliveries"].as_array().unwrap().clone()
}

/// Waits (up to 20 s) for the webhook's newest delivery to leave `pending`.
async fn settled(app: &TestApp, webhook: &str) -> Value {
    let started = Instant::now();
    loop {
        let all = deliveries(app, webhook).await;
        if let Some(newest) = all.first()
            && newest["state"] != "pending"
        {
            return newest.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_jobs_end_is_posted_signed_in_the_envelope_and_recorded_as_delivered() {
    let receiver = Receiver::start().await;
    let app = spawn_app().await;
    let webhook = create(&app, subscribe(&receiver, &["job.finished"])).await;
    assert_eq!(webhook["secret"], "********");
    assert_eq!(webhook["events"], json!(["job.finished"]));
    assert_eq!(webhook["url"], receiver.url);
    let id = webhook["id"].as_str().unwrap();

    let job = run_job(&app).await;
    let got = receiver
        .wait_for("job.finished", 1, |b| b["data"]["job_id"] == job)
        .await;
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    let post = &got[0];
    post.assert_signed_with(SECRET);
    assert_eq!(post.header("content-type"), "application/json");
    let body = post.json();
    assert_eq!(body["id"], post.header("x-pgcluster-delivery"));
    assert_eq!(body["event"], "job.finished");
    assert_eq!(body["workspace"], "default");
    let at = body["at"].as_str().unwrap();
    assert!(OffsetDateTime::parse(at, &Rfc3339).is_ok(), "{at}");
    let data = &body["data"];
    assert_eq!(data["kind"], "terraform.init");
    assert_eq!(data["status"], "succeeded");
    assert_eq!(data["workspace"], "default");
    assert_eq!(data["started_by"], "anonymous");
    assert_eq!(data["error"], Value::Null);

    let delivery = settled(&app, id).await;
    assert_eq!(delivery["state"], "delivered", "{delivery}");
    assert_eq!(delivery["id"], body["id"]);
    assert_eq!(delivery["webhook_id"], id);
    assert_eq!(delivery["event"], "job.finished");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{delivery}");
    assert_eq!(attempts[0]["status_code"], 200);

    // The secret is not shown again, nor in the job's log.
    let listed = app.get("/webhooks").await;
    assert_eq!(listed.body["webhooks"][0]["secret"], "********");
    let log = app.get(&format!("/jobs/{job}/log")).await;
    for text in [
        listed.body.to_string(),
        deliveries(&app, id)
            .await
            .iter()
            .map(Value::to_string)
            .collect(),
        log.body.to_string(),
        webhook.to_string(),
    ] {
        assert!(!text.contains(SECRET), "{text}");
    }
}

#[tokio::test]
async fn a_failed_job_is_told_with_its_error_and_a_deploy_once_as_a_whole() {
    let receiver = Receiver::start().await;
    let app = spawn_app().await;
    create(&app, subscribe(&receiver, &["job.finished"])).await;
    app.fake("fail", "init");
    let init = app.post_empty("/terraform/init").await;
    assert_eq!(init.status, 400, "{:?}", init.body);
    let job = init.body["job_id"].as_str().unwrap().to_string();
    let got = receiver
        .wait_for("job.finished", 1, |b| b["data"]["job_id"] == job)
        .await;
    let data = &got[0].json()["data"];
    assert_eq!(data["status"], "failed");
    assert!(
        data["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{data}"
    );

    // A deploy is told once, after each of its tool steps, told once each.
    app.unfake("fail");
    app.fake("outputs", crate::ansible::OUTPUTS_TWO_REPLICAS);
    let deploy = app.post("/deploy", crate::deploy::deploy_body(&app)).await;
    assert_eq!(deploy.status, 200, "{:?}", deploy.body);
    let id = deploy.body["job_id"].as_str().unwrap().to_string();
    receiver
        .wait_for("job.finished", 1, |b| b["data"]["job_id"] == id)
        .await;
    let told: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| r.json()["data"].clone())
        .filter(|d| d["job_id"] != job)
        .collect();
    let kinds: Vec<&str> = told.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "terraform.init",
            "terraform.plan",
            "terraform.apply",
            "terraform.output",
            "ansible.run",
            "deploy"
        ]
    );
    let (last, steps) = told.split_last().unwrap();
    assert_eq!(last["job_id"], id);
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["parent_id"], Value::Null);
    assert!(steps.iter().all(|s| s["parent_id"] == id), "{steps:?}");
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_delivery_on_the_third_try() {
    let receiver = Receiver::start().await;
    receiver.fail(2);
    let app = spawn_app_with(AppOptions {
        vars: vec![("WEBHOOK_RETRY_SECONDS", "1".into())],
        ..AppOptions::default()
    })
    .await;
    let webhook = create(&app, subscribe(&receiver, &["job.finished"])).await;
    let id = webhook["id"].as_str().unwrap();
    let job = run_job(&app).await;

    let delivery = settled(&app, id).await;
    assert_eq!(delivery["state"], "delivered", "{delivery}");
    let attempts = delivery["attempts"].as_array().unwrap();
    let codes: Vec<&Value> = attempts.iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)], "{delivery}");
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("500"),
        "{delivery}"
    );
    assert_eq!(attempts[2]["error"], Value::Null);

    // The same delivery each time: same id, same body, same signature.
    let got = receiver
        .wait_for("job.finished", 3, |b| b["data"]["job_id"] == job)
        .await;
    assert_eq!(got.len(), 3);
    for post in &got {
        post.assert_signed_with(SECRET);
        assert_eq!(post.body, got[0].body);
        assert_eq!(post.header("x-pgcluster-delivery"), delivery["id"]);
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_2xx_is_given_up_after_the_last_try() {
    let receiver = Receiver::start().await;
    receiver.fail(100);
    let app = spawn_app_with(AppOptions {
        vars: vec![
            ("WEBHOOK_RETRY_SECONDS", "1".into()),
            ("WEBHOOK_MAX_ATTEMPTS", "3".into()),
        ],
        ..AppOptions::default()
    })
    .await;
    let webhook = create(&app, subscribe(&receiver, &["job.finished"])).await;
    let id = webhook["id"].as_str().unwrap();
    run_job(&app).await;
    let delivery = settled(&app, id).await;
    assert_eq!(delivery["state"], "failed", "{delivery}");
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 3);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pgcluster_webhook_deliveries_total{")
                && l.contains("outcome=\"failed\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_stored() {
    let receiver = Receiver::start().await;
    let app = spawn_app().await;
    let good = subscribe(&receiver, &["job.finished"]);
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    for (body, field, says) in [
        (
            with("events", json!(["job.started"])),
            "events",
            "cluster.leader_changed",
        ),
        (with("events", json!([])), "events", "at least one"),
        (with("url", json!("ftp://example.com/hook")), "url", "http"),
        (
            with("url", json!("http://169.254.169.254/latest/meta-data/")),
            "url",
            "link-local",
        ),
        (with("url", json!("http://[fe80::1]/")), "url", "link-local"),
        (with("url", json!("not a url")), "url", "not a valid URL"),
        (with("secret", json!("too-short")), "secret", "16"),
        (with("workspace", json!("Not A Name")), "workspace", ""),
    ] {
        let answer = app.post("/webhooks", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        let reason = answer.body["fields"][field].as_str().unwrap_or_default();
        assert!(
            answer.body["fields"][field].is_string() && reason.contains(says),
            "{body}: {:?}",
            answer.body
        );
        assert!(!answer.body.to_string().contains(SECRET));
    }
    let unknown = app
        .post("/webhooks", with("events", json!(["job.started"])))
        .await;
    let reason = unknown.body["fields"]["events"].as_str().unwrap();
    for event in [
        "job.finished",
        "approval.requested",
        "approval.decided",
        "workspace.expiring",
        "workspace.expired",
        "cluster.leader_changed",
    ] {
        assert!(reason.contains(event), "{reason}");
    }
    let listed = app.get("/webhooks").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["webhooks"], json!([]));

    for path in [
        "/webhooks/6f1c2a9e-3d4b-4c5a-8e7f-0a1b2c3d4e5f",
        "/webhooks/nonsense",
    ] {
        assert_eq!(app.delete(path).await.status, 404, "{path}");
        let deliveries = app.get(&format!("{path}/deliveries")).await;
        assert_eq!(deliveries.status, 404, "{path}");
    }
}

#[tokio::test]
async fn a_deleted_webhook_gets_no_more_deliveries() {
    let receiver = Receiver::start().await;
    let app = spawn_app().await;
    let webhook = create(&app, subscribe(&receiver, &["job.finished"])).await;
    let id = webhook["id"].as_str().unwrap();
    let first = run_job(&app).await;
    receiver
        .wait_for("job.finished", 1, |b| b["data"]["job_id"] == first)
        .await;
    let deleted = app.delete(&format!("/webhooks/{id}")).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(app.get("/webhooks").await.body["webhooks"], json!([]));
    assert_eq!(
        app.get(&format!("/webhooks/{id}/deliveries")).await.status,
        404
    );

    let second = run_job(&app).await;
    app.wait_for_job(&second).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1, "{:?}", receiver.received());
}

#[tokio::test]
async fn a_webhook_for_one_workspace_and_other_events_hears_nothing_else() {
    let receiver = Receiver::start().await;
    let other = Receiver::start().await;
    let app = spawn_app().await;
    create(
        &app,
        json!({"url": receiver.url, "events": ["job.finished"], "secret": SECRET,
            "workspace": "staging"}),
    )
    .await;
    create(&app, subscribe(&other, &["cluster.leader_changed"])).await;
    let everything = create(&app, subscribe(&other, &["job.finished"])).await;
    let job = run_job(&app).await;
    other
        .wait_for("job.finished", 1, |b| b["data"]["job_id"] == job)
        .await;
    settled(&app, everything["id"].as_str().unwrap()).await;
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());
    assert_eq!(other.received().len(), 1, "{:?}", other.received());
}

#[tokio::test]
async fn a_leader_change_the_monitor_sees_is_posted() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(AppOptions {
        vars: vec![("CLUSTER_MONITOR_SECONDS", "1".into())],
        ..AppOptions::default()
    })
    .await;
    create(&app, subscribe(&receiver, &["cluster.leader_changed"])).await;
    app.fake("outputs", crate::ansible::OUTPUTS_TWO_REPLICAS);
    let configured = app
        .post("/ansible/configure", crate::ansible::configure_body(&app))
        .await;
    assert_eq!(configured.status, 200, "{:?}", configured.body);
    crate::ha::set_probe(
        &app,
        &crate::ha::probe_output(Some("primary1"), 1, |_, _| {}),
    );
    let started = Instant::now();
    while crate::ha::ssh_calls(&app).len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(15), "no probe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::ha::set_probe(
        &app,
        &crate::ha::probe_output(Some("replica1"), 2, |_, _| {}),
    );
    let got = receiver
        .wait_for("cluster.leader_changed", 1, |_| true)
        .await;
    got[0].assert_signed_with(SECRET);
    let body = got[0].json();
    assert_eq!(body["workspace"], "default");
    assert_eq!(
        body["data"],
        json!({"from": "primary1", "to": "replica1", "timeline": 2, "cause": "automatic"})
    );
}

/// The server binary with DEBUG on: the secret is in none of its log files
/// nor on its console while it creates a webhook and delivers to it.
#[tokio::test]
async fn the_secret_stays_out_of_the_log_files() {
    let receiver = Receiver::start().await;
    let root = tempfile::tempdir().unwrap();
    let server =
        crate::server_process::ServerProcess::start(root.path(), &[("DEBUG", "true")]).await;
    let (status, webhook) = server
        .post("/webhooks", subscribe(&receiver, &["job.finished"]))
        .await;
    assert_eq!(status, 201, "{webhook}");
    let (status, init) = server.post("/terraform/init", json!({})).await;
    assert_eq!(status, 200, "{init}");
    let job = init["job_id"].as_str().unwrap().to_string();
    receiver
        .wait_for("job.finished", 1, |b| b["data"]["job_id"] == job)
        .await[0]
        .assert_signed_with(SECRET);
    let deliveries = server
        .get(&format!(
            "/webhooks/{}/deliveries",
            webhook["id"].as_str().unwrap()
        ))
        .await;
    assert!(!deliveries.to_string().contains(SECRET));

    let mut child = server.child;
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap();
    let logs = root.path().join("logs");
    let mut files = 0;
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains(SECRET), "the secret in {}", path.display());
        files += 1;
    }
    assert!(files >= 2, "app.log and terraform.log at least");
    let app_log = crate::server_process::read_log(&logs, "app.log");
    assert!(app_log.contains("webhook delivered"), "{app_log}");
}

#[tokio::test]
async fn an_expiry_is_told_before_then_after_the_servers_destroy() {
    let receiver = Receiver::start().await;
    let app = spawn_slow_stack_app(vec![
        ("EXPIRY_SCHEDULER_SECONDS", "1".into()),
        ("WORKSPACE_EXPIRY_WARNING_SECONDS", "10800".into()),
    ])
    .await;
    create(
        &app,
        subscribe(
            &receiver,
            &["workspace.expiring", "workspace.expired", "job.finished"],
        ),
    )
    .await;
    let expires_at = (OffsetDateTime::now_utc() + time::Duration::hours(2))
        .format(&Rfc3339)
        .unwrap();
    let created = app
        .post(
            "/workspaces",
            json!({"name": "brief", "expires_at": expires_at}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    for (step, body) in [
        ("generate", json!({"delay": 0})),
        ("init", json!({})),
        ("plan", json!({})),
        ("apply", json!({})),
    ] {
        let ran = app
            .post(&format!("/workspaces/brief/terraform/{step}"), body)
            .await;
        assert_eq!(ran.status, 200, "{step}: {:?}", ran.body);
    }
    // Within the warning time: told once, with the expiry.
    let expiring = receiver
        .wait_for("workspace.expiring", 1, |b| b["workspace"] == "brief")
        .await;
    assert_eq!(expiring[0].json()["data"]["expires_at"], json!(expires_at));
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.header("x-pgcluster-event") != "workspace.expired")
    );

    let soon = (OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .format(&Rfc3339)
        .unwrap();
    let due = app
        .send_as(
            reqwest::Method::PATCH,
            None,
            "/workspaces/brief",
            Some(json!({"expires_at": soon})),
        )
        .await;
    assert_eq!(due.status, 200, "{:?}", due.body);
    let expired = receiver
        .wait_for("workspace.expired", 1, |b| b["workspace"] == "brief")
        .await;
    let destroy_id = expired[0].json()["data"]["destroy_job_id"].clone();
    let destroyed = receiver
        .wait_for("job.finished", 1, |b| b["data"]["job_id"] == destroy_id)
        .await;
    let destroyed = destroyed[0].json();
    assert_eq!(destroyed["data"]["kind"], "terraform.destroy");
    assert_eq!(destroyed["data"]["status"], "succeeded");
    assert_eq!(destroyed["data"]["started_by"], "scheduler");
    // Each expiry is warned about once.
    let first_warnings = receiver
        .received()
        .iter()
        .filter(|r| r.header("x-pgcluster-event") == "workspace.expiring")
        .filter(|r| r.json()["data"]["expires_at"] == json!(expires_at))
        .count();
    assert_eq!(first_warnings, 1);
    for received in receiver.received() {
        received.assert_signed_with(SECRET);
    }
}

#[tokio::test]
async fn an_approval_is_told_from_request_to_decision_to_the_applys_end() {
    use pgcluster_api::tokens::{Scope, TokenEntry};
    const ADMIN: &str = "pgc_admin-token-for-webhook-approvals";
    const MAKER: &str = "pgc_maker-token-for-webhook-approvals";
    const REVIEWER: &str = "pgc_reviewer-token-for-webhook-approvals";
    let tokens = [
        ("admin", Scope::Admin, ADMIN),
        ("maker", Scope::Apply, MAKER),
        ("reviewer", Scope::Apply, REVIEWER),
    ]
    .map(|(name, scope, token)| TokenEntry::for_token(name, scope, token).config_entry())
    .join(",");
    let receiver = Receiver::start().await;
    let stack = repo().join("tests/fixtures/approval_stack");
    let app = spawn_app_with(AppOptions {
        tools: Tools::RealTerraform,
        vars: vec![
            ("API_TOKENS", tokens),
            ("TERRAFORM_DIR", stack.display().to_string()),
        ],
    })
    .await;
    let events = ["job.finished", "approval.requested", "approval.decided"];
    let created = app
        .post_as(ADMIN, "/webhooks", subscribe(&receiver, &events))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let workspace = json!({"name": "gated", "approval_required": true});
    let made = app.post_as(MAKER, "/workspaces", workspace).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let variables = json!({"bastion_key_pair": "b", "db_key_pair": "d", "replica_count": 1});
    for (step, body) in [
        ("generate", variables),
        ("init", json!({})),
        ("plan", json!({})),
    ] {
        let ran = app
            .post_as(MAKER, &format!("/workspaces/gated/terraform/{step}"), body)
            .await;
        assert_eq!(ran.status, 200, "{step}: {:?}", ran.body);
    }
    let plan_job = app
        .get_as(MAKER, "/jobs?workspace=gated&kind=terraform.plan")
        .await
        .body["jobs"][0]["id"]
        .clone();
    let requested = receiver
        .wait_for("approval.requested", 1, |b| b["data"]["job_id"] == plan_job)
        .await;
    let requested = requested[0].json();
    assert_eq!(requested["workspace"], "gated");
    assert_eq!(requested["data"]["started_by"], "maker");
    assert!(
        requested["data"]["summary"]["add"].as_u64().unwrap() >= 1,
        "{requested}"
    );

    let approved = app
        .post_as(
            REVIEWER,
            &format!("/jobs/{}/approve", plan_job.as_str().unwrap()),
            json!({"comment": "looks right"}),
        )
        .await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    let applied = app
        .post_as(MAKER, "/workspaces/gated/terraform/apply", json!({}))
        .await;
    assert_eq!(applied.status, 200, "{:?}", applied.body);
    let apply_job = applied.body["job_id"].clone();
    receiver
        .wait_for("job.finished", 1, |b| b["data"]["job_id"] == apply_job)
        .await;

    // In order: the plan's end and the request, the decision, the apply's end.
    let sequence: Vec<(String, Value)> = receiver
        .received()
        .iter()
        .map(|r| {
            r.assert_signed_with(SECRET);
            (r.header("x-pgcluster-event").to_string(), r.json())
        })
        .filter(|(_, body)| body["workspace"] == "gated")
        .collect();
    let position = |event: &str, job: &Value| {
        sequence
            .iter()
            .position(|(e, b)| e == event && &b["data"]["job_id"] == job)
            .unwrap_or_else(|| panic!("no {event} of {job}: {sequence:?}"))
    };
    let decided = position("approval.decided", &plan_job);
    assert!(position("approval.requested", &plan_job) < decided);
    assert!(position("job.finished", &plan_job) < decided);
    assert!(decided < position("job.finished", &apply_job));
    let decision = &sequence[decided].1["data"];
    assert_eq!(decision["state"], "approved");
    assert_eq!(decision["by"], "reviewer");
    assert_eq!(decision["comment"], "looks right");
}
