//! `/deploy`: the whole flow as one job with named steps, resumable from the
//! step that failed.

use serde_json::{Value, json};

use crate::ansible::OUTPUTS_TWO_REPLICAS;
use crate::helpers::{TestApp, key_file, read_lines, snapshot, spawn_app};

pub(crate) fn deploy_body(app: &TestApp) -> Value {
    json!({
        "variables": {"bastion_key_pair": "bastion-key", "db_key_pair": "db-key", "replica_count": "2"},
        "configure": {
            "bastion_key_path": key_file(app, "bastion_key"),
            "db_key_path": key_file(app, "db_key"),
            "max_connections": "77",
        },
        "postgresql_version": 15,
    })
}

fn step_names(body: &Value) -> Vec<(String, String)> {
    body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The first argument of each tool call, in order.
fn commands(app: &TestApp) -> Vec<String> {
    app.calls()
        .iter()
        .map(|call| {
            let argv = read_lines(&call.join("argv"));
            if argv.iter().any(|a| a.ends_with("site.yml")) {
                "ansible-playbook".to_string()
            } else {
                argv[0].clone()
            }
        })
        .collect()
}

#[tokio::test]
async fn a_deploy_runs_every_step_in_order_as_one_job() {
    let app = spawn_app().await;
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    let answer = app.post("/deploy", deploy_body(&app)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["message"], "Deploy completed successfully");
    let expected: Vec<(String, String)> = [
        "generate",
        "init",
        "plan",
        "apply",
        "output",
        "configure",
        "run",
    ]
    .iter()
    .map(|s| (s.to_string(), "succeeded".to_string()))
    .collect();
    assert_eq!(step_names(&answer.body), expected);
    assert_eq!(
        commands(&app),
        ["init", "plan", "apply", "output", "ansible-playbook"]
    );
    assert_eq!(answer.body["inventory"]["primary"], "10.0.1.10");
    assert_eq!(
        answer.body["outputs"]["bastion_eip_address"],
        "203.0.113.10"
    );

    // The files the separate endpoints would have written.
    let ws = app.workspace();
    let tfvars = std::fs::read_to_string(ws.join("terraform/terraform.tfvars")).unwrap();
    assert!(tfvars.contains("replica_count = 2"), "{tfvars}");
    let settings = std::fs::read_to_string(ws.join("ansible/postgresql.yml")).unwrap();
    assert!(settings.contains("max_connections"), "{settings}");

    // The deploy is a job; each tool step is a job of its own with its log.
    let id = answer.body["job_id"].as_str().unwrap();
    let job = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(job.body["kind"], "deploy");
    assert_eq!(job.body["status"], "succeeded");
    assert_eq!(step_names(&job.body["result"]), expected);
    let steps = job.body["result"]["steps"].as_array().unwrap().clone();
    assert!(steps[0].get("job_id").is_none(), "generate runs no tool");
    assert!(
        steps[5].get("job_id").is_none(),
        "configure reads the output step's outputs"
    );
    for step in steps
        .iter()
        .filter(|s| s["name"] != "generate" && s["name"] != "configure")
    {
        let child = step["job_id"].as_str().expect("a tool step has a job");
        let child_job = app.get(&format!("/jobs/{child}")).await;
        assert_eq!(child_job.body["status"], "succeeded", "{step}");
        assert_eq!(child_job.body["request"]["deploy"], id);
        let log = app.get(&format!("/jobs/{child}/log")).await;
        assert!(!log.body["lines"].as_array().unwrap().is_empty(), "{step}");
    }
    let log = app.get(&format!("/jobs/{id}/log")).await;
    let text: Vec<&str> = log.body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(text.contains(&"step plan: started"), "{text:?}");
    assert!(text.contains(&"step run: succeeded"), "{text:?}");
}

#[tokio::test]
async fn a_deploy_failed_at_run_is_resumed_from_run() {
    let app = spawn_app().await;
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    app.fake("ansible_fail", "");
    let failed = app.post("/deploy", deploy_body(&app)).await;
    assert_eq!(failed.status, 400, "{:?}", failed.body);
    assert_eq!(failed.body["error"], "Deploy failed at step 'run'");
    assert_eq!(failed.body["failed_step"], "run");
    assert_eq!(failed.body["status"], "failed");
    let details = failed.body["details"].as_str().unwrap();
    assert!(details.contains("fake task failure on stdout"), "{details}");
    let statuses: Vec<String> = step_names(&failed.body)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        statuses,
        [
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "failed"
        ]
    );
    let failed_id = failed.body["job_id"].as_str().unwrap().to_string();
    let calls = app.calls().len();

    // After the fix, resume runs the playbook only.
    app.unfake("ansible_fail");
    let resumed = app.post_empty("/deploy/resume").await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    assert_eq!(resumed.body["resumed_from"], failed_id.as_str());
    let statuses: Vec<String> = step_names(&resumed.body)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        statuses,
        [
            "skipped",
            "skipped",
            "skipped",
            "skipped",
            "skipped",
            "skipped",
            "succeeded"
        ]
    );
    assert_eq!(commands(&app)[calls..], ["ansible-playbook"]);
    let argv = read_lines(&app.last_call().join("argv"));
    assert!(
        argv.iter()
            .any(|a| a.contains("\"postgresql_version\":15")
                || a.contains("\"postgresql_version\": 15")),
        "the resumed run keeps the version: {argv:?}"
    );

    // Nothing left to resume.
    let again = app.post_empty("/deploy/resume").await;
    assert_eq!(again.status, 409, "{:?}", again.body);
}

#[tokio::test]
async fn a_deploy_failed_at_apply_resumes_with_a_new_plan() {
    let app = spawn_app().await;
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    // The fake fails every terraform call from the third on (apply).
    let body = deploy_body(&app);
    app.fake("fail_from", "2");
    let failed = app.post("/deploy", body).await;
    assert_eq!(failed.status, 400, "{:?}", failed.body);
    assert_eq!(failed.body["failed_step"], "apply");
    app.unfake("fail_from");
    let calls = app.calls().len();
    let resumed = app.post_empty("/deploy/resume").await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    assert_eq!(
        commands(&app)[calls..],
        ["plan", "apply", "output", "ansible-playbook"]
    );
}

#[tokio::test]
async fn a_bad_deploy_request_names_every_field_and_changes_nothing() {
    let app = spawn_app().await;
    app.generate().await;
    let before = snapshot(&app.workspace());
    let answer = app
        .post(
            "/deploy",
            json!({
                "variables": {"bastion_key_pair": "k", "colour": "blue", "replica_count": "two"},
                "configure": {"bastion_key_path": "/etc/passwd", "work_mem": "{{ x }}"},
                "postgresql_version": 99,
            }),
        )
        .await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let fields = answer.body["fields"].as_object().unwrap();
    for field in [
        "variables.colour",
        "variables.db_key_pair",
        "variables.replica_count",
        "configure.bastion_key_path",
        "configure.db_key_path",
        "configure.work_mem",
        "postgresql_version",
    ] {
        assert!(
            fields.contains_key(field),
            "{field} missing from {fields:?}"
        );
    }
    for body in [
        json!({}),
        json!({"variables": {}}),
        json!({"variables": [], "configure": {}}),
        json!({"variables": {}, "configure": {}, "extra": 1}),
        json!({"variables": {}, "configure": {}, "async": "yes"}),
    ] {
        let answer = app.post("/deploy", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        assert!(answer.body["error"].is_string());
    }
    assert_eq!(snapshot(&app.workspace()), before);
    assert!(app.calls().is_empty(), "no tool ran");
    let jobs = app.get("/jobs?kind=deploy").await;
    assert_eq!(jobs.body["jobs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn resume_without_a_failed_deploy_is_a_conflict() {
    let app = spawn_app().await;
    let answer = app.post_empty("/deploy/resume").await;
    assert_eq!(answer.status, 409, "{:?}", answer.body);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("no deploy to resume")
    );
}

#[tokio::test]
async fn an_async_deploy_shows_its_steps_while_it_runs_and_cancel_stops_it() {
    let app = spawn_app().await;
    app.fake("outputs", OUTPUTS_TWO_REPLICAS);
    app.fake("sleep", "30");
    let mut body = deploy_body(&app);
    body["async"] = json!(true);
    let started = app.post("/deploy", body).await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    let id = started.body["job_id"].as_str().unwrap().to_string();

    // The init step runs (the fake sleeps): the deploy shows it with its job.
    let mut init_job = None;
    for _ in 0..100 {
        let job = app.get(&format!("/jobs/{id}")).await;
        let steps = &job.body["result"]["steps"];
        if steps[1]["status"] == "running" && steps[1]["job_id"].is_string() {
            assert_eq!(steps[0]["status"], "succeeded");
            assert_eq!(steps[2]["status"], "pending");
            init_job = steps[1]["job_id"].as_str().map(str::to_string);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let init_job = init_job.expect("the init step shows its running job");

    // The workspace is the deploy's: another run is refused, naming it.
    let busy = app.post_empty("/terraform/plan").await;
    assert_eq!(busy.status, 409, "{:?}", busy.body);
    assert_eq!(busy.body["job_id"], id.as_str());

    // Cancel once the tool is at work.
    for _ in 0..100 {
        if !app.calls().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let cancel = app.post_empty(&format!("/jobs/{id}/cancel")).await;
    assert_eq!(cancel.status, 200, "{:?}", cancel.body);
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["result"]["failed_step"], "init");
    let child = app.wait_for_job(&init_job).await;
    assert_eq!(child["status"], "cancelled", "{child}");
    assert_eq!(commands(&app), ["init"], "nothing ran after the cancel");
    // The workspace is free again.
    app.unfake("sleep");
    assert_eq!(app.post_empty("/terraform/init").await.status, 200);
}
