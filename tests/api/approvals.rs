//! Plan summaries and four eyes: a plan made while the workspace requires
//! approval is applied only once another token approved it. Real terraform
//! on `tests/fixtures/approval_stack` (one `null_resource`), fake ansible.

use pgcluster_api::tokens::{Scope, TokenEntry};
use serde_json::{Value, json};

use crate::helpers::*;

const MAKER: &str = "pgc_maker-token-for-approval-tests";
const REVIEWER: &str = "pgc_reviewer-token-for-approval-tests";
const PLANNER: &str = "pgc_planner-token-for-approval-tests";

fn api_tokens() -> String {
    [
        ("maker", Scope::Apply, MAKER),
        ("reviewer", Scope::Apply, REVIEWER),
        ("planner", Scope::Plan, PLANNER),
    ]
    .map(|(name, scope, token)| TokenEntry::for_token(name, scope, token).config_entry())
    .join(",")
}

/// Real terraform on the approval stack, `default` requiring approval.
async fn spawn_approving_app() -> TestApp {
    let stack = repo().join("tests/fixtures/approval_stack");
    spawn_app_with(AppOptions {
        tools: Tools::RealTerraform,
        vars: vec![
            ("API_TOKENS", api_tokens()),
            ("DEFAULT_APPROVAL_REQUIRED", "true".into()),
            ("TERRAFORM_DIR", stack.display().to_string()),
        ],
    })
    .await
}

/// Generates the variables (`replica_count` as given) and inits, as the maker.
async fn prepare(app: &TestApp, replicas: u32) {
    generate(app, replicas).await;
    let init = app.post_as(MAKER, "/terraform/init", json!({})).await;
    assert_eq!(init.status, 200, "{:?}", init.body);
}

async fn generate(app: &TestApp, replicas: u32) {
    let body = json!({"bastion_key_pair": "b", "db_key_pair": "d", "replica_count": replicas});
    let generated = app.post_as(MAKER, "/terraform/generate", body).await;
    assert_eq!(generated.status, 200, "{:?}", generated.body);
}

/// A plan by the maker; its answer.
async fn plan(app: &TestApp) -> Value {
    let plan = app.post_as(MAKER, "/terraform/plan", json!({})).await;
    assert_eq!(plan.status, 200, "{:?}", plan.body);
    plan.body
}

fn job_id(body: &Value) -> String {
    body["job_id"].as_str().expect("a job id").to_string()
}

async fn approve(app: &TestApp, token: &str, job: &str, body: Value) -> Answer {
    app.post_as(token, &format!("/jobs/{job}/approve"), body)
        .await
}

async fn reject(app: &TestApp, token: &str, job: &str, body: Value) -> Answer {
    app.post_as(token, &format!("/jobs/{job}/reject"), body)
        .await
}

fn assert_four_eyes(answer: &Answer) {
    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(answer.body["rule"], "four_eyes", "{:?}", answer.body);
}

#[tokio::test]
async fn a_plan_is_summarized_and_applied_only_once_another_token_approved_it() {
    let app = spawn_approving_app().await;
    prepare(&app, 1).await;
    let planned = plan(&app).await;
    let id = job_id(&planned);
    let created = json!({"add": 1, "change": 0, "destroy": 0,
        "resources": [{"address": "null_resource.cluster", "action": "create"}]});
    assert_eq!(planned["summary"], created);
    assert_eq!(planned["approval"]["state"], "pending");

    // The job says the same, alone and in the list.
    let job = app.get_as(REVIEWER, &format!("/jobs/{id}")).await.body;
    assert_eq!(job["result"]["summary"], created);
    assert_eq!(
        job["approval"],
        json!({"state": "pending", "by": null, "at": null, "comment": null})
    );
    let listed = app.get_as(REVIEWER, "/jobs?kind=terraform.plan").await.body;
    assert_eq!(listed["jobs"][0]["id"], id.as_str());
    assert_eq!(listed["jobs"][0]["approval"]["state"], "pending");
    let init = app.get_as(REVIEWER, "/jobs?kind=terraform.init").await.body;
    assert!(init["jobs"][0].get("approval").is_none(), "{init}");

    // Not applied while it awaits approval.
    let refused = app.post_as(MAKER, "/terraform/apply", json!({})).await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["job_id"], id.as_str());
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("awaits approval"),
        "{:?}",
        refused.body
    );

    // Not by its maker, nor by a token below apply.
    let own = approve(&app, MAKER, &id, json!({})).await;
    assert_four_eyes(&own);
    assert!(own.body["error"].as_str().unwrap().contains("'maker'"));
    let planner = approve(&app, PLANNER, &id, json!({})).await;
    assert_eq!(planner.status, 403, "{:?}", planner.body);
    assert_eq!(planner.body["required_scope"], "apply");

    let approved = approve(&app, REVIEWER, &id, json!({"comment": "one replica, fine"})).await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    assert_eq!(approved.body["approval"]["state"], "approved");
    assert_eq!(approved.body["approval"]["by"], "reviewer");
    let job = app.get_as(MAKER, &format!("/jobs/{id}")).await.body;
    assert_eq!(job["approval"]["state"], "approved");
    assert_eq!(job["approval"]["by"], "reviewer");
    assert_eq!(job["approval"]["comment"], "one replica, fine");
    assert!(job["approval"]["at"].is_string(), "{job}");

    let twice = approve(&app, REVIEWER, &id, json!({})).await;
    assert_eq!(twice.status, 409, "{:?}", twice.body);

    let applied = app.post_as(MAKER, "/terraform/apply", json!({})).await;
    assert_eq!(applied.status, 200, "{:?}", applied.body);

    // A changed variable replaces the resource: one added, one destroyed.
    generate(&app, 2).await;
    let replanned = plan(&app).await;
    assert_eq!(
        replanned["summary"],
        json!({"add": 1, "change": 0, "destroy": 1,
            "resources": [{"address": "null_resource.cluster", "action": "replace"}]})
    );
    assert_eq!(replanned["approval"]["state"], "pending");
}

#[tokio::test]
async fn a_rejected_plan_is_discarded_and_a_rejection_says_why() {
    let app = spawn_approving_app().await;
    prepare(&app, 1).await;
    let id = job_id(&plan(&app).await);

    let silent = reject(&app, REVIEWER, &id, json!({})).await;
    assert_eq!(silent.status, 400, "{:?}", silent.body);
    assert!(
        silent.body["fields"]["comment"].is_string(),
        "{:?}",
        silent.body
    );
    let own = reject(&app, MAKER, &id, json!({"comment": "mine"})).await;
    assert_four_eyes(&own);

    let rejected = reject(&app, REVIEWER, &id, json!({"comment": "too big"})).await;
    assert_eq!(rejected.status, 200, "{:?}", rejected.body);
    assert_eq!(rejected.body["approval"]["state"], "rejected");
    let job = app.get_as(MAKER, &format!("/jobs/{id}")).await.body;
    assert_eq!(job["approval"]["state"], "rejected");
    assert_eq!(job["approval"]["comment"], "too big");

    let apply = app.post_as(MAKER, "/terraform/apply", json!({})).await;
    assert_eq!(apply.status, 409, "{:?}", apply.body);
    assert!(
        apply.body["error"]
            .as_str()
            .unwrap()
            .contains("no saved plan"),
        "{:?}",
        apply.body
    );
    let late = approve(&app, REVIEWER, &id, json!({})).await;
    assert_eq!(late.status, 409, "{:?}", late.body);
}

#[tokio::test]
async fn only_the_current_plan_of_a_succeeded_plan_job_is_decided() {
    let app = spawn_approving_app().await;
    prepare(&app, 1).await;
    let older = job_id(&plan(&app).await);
    let newer = job_id(&plan(&app).await);

    // A newer plan replaced it.
    let stale = approve(&app, REVIEWER, &older, json!({})).await;
    assert_eq!(stale.status, 409, "{:?}", stale.body);
    assert!(
        stale.body["error"].as_str().unwrap().contains(&newer),
        "{:?}",
        stale.body
    );
    let stale = reject(&app, REVIEWER, &older, json!({"comment": "old"})).await;
    assert_eq!(stale.status, 409, "{:?}", stale.body);

    // The variables changed since it was made.
    generate(&app, 3).await;
    let changed = approve(&app, REVIEWER, &newer, json!({})).await;
    assert_eq!(changed.status, 409, "{:?}", changed.body);
    assert!(
        changed.body["error"]
            .as_str()
            .unwrap()
            .contains("terraform.tfvars changed"),
        "{:?}",
        changed.body
    );
    let job = app.get_as(MAKER, &format!("/jobs/{newer}")).await.body;
    assert_eq!(job["approval"]["state"], "pending");

    // Not a plan; no such job; not a job id; a bad body.
    let init = app.get_as(MAKER, "/jobs?kind=terraform.init").await.body["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let not_plan = approve(&app, REVIEWER, &init, json!({})).await;
    assert_eq!(not_plan.status, 409, "{:?}", not_plan.body);
    assert!(
        not_plan.body["error"]
            .as_str()
            .unwrap()
            .contains("terraform.init"),
        "{:?}",
        not_plan.body
    );
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_eq!(
        approve(&app, REVIEWER, unknown, json!({})).await.status,
        404
    );
    let bad_id = approve(&app, REVIEWER, "not-a-job", json!({})).await;
    assert_eq!(bad_id.status, 400, "{:?}", bad_id.body);
    assert!(bad_id.body["fields"]["id"].is_string(), "{:?}", bad_id.body);
    let bad_body = approve(&app, REVIEWER, &newer, json!({"comment": 5})).await;
    assert_eq!(bad_body.status, 400, "{:?}", bad_body.body);
    assert!(
        bad_body.body["error"].as_str().unwrap().contains("comment"),
        "{:?}",
        bad_body.body
    );
    let unknown_field = approve(&app, REVIEWER, &newer, json!({"approve": true})).await;
    assert_eq!(unknown_field.status, 400, "{:?}", unknown_field.body);
}

#[tokio::test]
async fn without_authentication_no_plan_can_be_approved_and_apply_stays_refused() {
    let app = spawn_app_with(AppOptions {
        vars: vec![("DEFAULT_APPROVAL_REQUIRED", "true".into())],
        ..AppOptions::default()
    })
    .await;
    app.generate().await;
    let planned = app.post_empty("/terraform/plan").await;
    assert_eq!(planned.status, 200, "{:?}", planned.body);
    assert_eq!(planned.body["approval"]["state"], "pending");
    let id = job_id(&planned.body);

    let approved = app.post(&format!("/jobs/{id}/approve"), json!({})).await;
    assert_four_eyes(&approved);
    assert!(
        approved.body["error"]
            .as_str()
            .unwrap()
            .contains("need authentication"),
        "{:?}",
        approved.body
    );
    let apply = app.post_empty("/terraform/apply").await;
    assert_eq!(apply.status, 409, "{:?}", apply.body);
    assert_eq!(apply.body["job_id"], id.as_str());
}

#[tokio::test]
async fn a_plan_made_without_approval_required_is_summarized_and_applies_as_before() {
    let app = spawn_app().await;
    app.fake(
        "show",
        r#"{"resource_changes": [
            {"address": "a.one", "change": {"actions": ["create"]}},
            {"address": "a.two", "change": {"actions": ["update"]}},
            {"address": "data.a.three", "change": {"actions": ["read"]}},
            {"address": "a.four", "change": {"actions": ["no-op"]}},
            {"address": "a.five", "change": {"actions": ["delete"]}},
            {"address": "a.six", "change": {"actions": ["create", "delete"]}}]}"#,
    );
    app.generate().await;
    let planned = app.post_empty("/terraform/plan").await;
    assert_eq!(planned.status, 200, "{:?}", planned.body);
    assert!(planned.body.get("approval").is_none(), "{:?}", planned.body);
    assert_eq!(
        planned.body["summary"],
        json!({"add": 2, "change": 1, "destroy": 2, "resources": [
            {"address": "a.one", "action": "create"},
            {"address": "a.two", "action": "update"},
            {"address": "a.five", "action": "delete"},
            {"address": "a.six", "action": "replace"}]})
    );
    let id = job_id(&planned.body);
    let job = app.get(&format!("/jobs/{id}")).await.body;
    assert!(job.get("approval").is_none(), "{job}");
    let approve = app.post(&format!("/jobs/{id}/approve"), json!({})).await;
    assert_eq!(approve.status, 409, "{:?}", approve.body);
    let apply = app.post_empty("/terraform/apply").await;
    assert_eq!(apply.status, 200, "{:?}", apply.body);
}

#[tokio::test]
async fn a_plan_that_cannot_be_summarized_fails_and_is_not_saved() {
    let app = spawn_app().await;
    app.fake("show_fail", "");
    app.generate().await;
    let planned = app.post_empty("/terraform/plan").await;
    assert_eq!(planned.status, 400, "{:?}", planned.body);
    assert!(
        planned.body["details"]
            .as_str()
            .unwrap()
            .contains("could not summarize the saved plan"),
        "{:?}",
        planned.body
    );
    let apply = app.post_empty("/terraform/apply").await;
    assert_eq!(apply.status, 409, "{:?}", apply.body);
    let plans: Vec<_> = std::fs::read_dir(app.workspace().join("plans"))
        .unwrap()
        .collect();
    assert!(plans.is_empty(), "{plans:?}");
}

fn deploy_body(app: &TestApp) -> Value {
    json!({
        "variables": {"bastion_key_pair": "b", "db_key_pair": "d", "replica_count": 1},
        "configure": {
            "bastion_key_path": key_file(app, "bastion_key"),
            "db_key_path": key_file(app, "db_key"),
        },
    })
}

fn statuses(body: &Value) -> Vec<String> {
    body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_deploy_stops_after_plan_for_approval_and_its_resume_applies_the_approved_plan() {
    let app = spawn_approving_app().await;
    let stopped = app.post_as(MAKER, "/deploy", deploy_body(&app)).await;
    assert_eq!(stopped.status, 409, "{:?}", stopped.body);
    let plan_id = stopped.body["awaiting_approval"]
        .as_str()
        .expect("the plan awaiting approval")
        .to_string();
    assert_eq!(
        statuses(&stopped.body),
        [
            "succeeded",
            "succeeded",
            "succeeded",
            "awaiting_approval",
            "pending",
            "pending",
            "pending"
        ]
    );
    let plan_step = &stopped.body["steps"][2];
    assert_eq!(plan_step["job_id"], plan_id.as_str());
    assert_eq!(plan_step["summary"]["add"], 1);

    // The deploy job itself ended, its result saying what it waits for.
    let deploy_id = job_id(&stopped.body);
    let deploy = app.get_as(MAKER, &format!("/jobs/{deploy_id}")).await.body;
    assert_eq!(deploy["status"], "succeeded", "{deploy}");
    assert_eq!(deploy["result"]["awaiting_approval"], plan_id.as_str());
    assert_eq!(deploy["result"]["steps"][3]["status"], "awaiting_approval");
    let plan = app.get_as(MAKER, &format!("/jobs/{plan_id}")).await.body;
    assert_eq!(plan["approval"]["state"], "pending");

    let early = app.post_as(MAKER, "/deploy/resume", json!({})).await;
    assert_eq!(early.status, 409, "{:?}", early.body);
    assert_eq!(early.body["job_id"], plan_id.as_str());

    let approved = approve(&app, REVIEWER, &plan_id, json!({})).await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    let resumed = app.post_as(MAKER, "/deploy/resume", json!({})).await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    assert_eq!(resumed.body["resumed_from"], deploy_id.as_str());
    assert_eq!(
        statuses(&resumed.body),
        [
            "skipped",
            "skipped",
            "skipped",
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded"
        ]
    );
    assert_eq!(resumed.body["inventory"]["primary"], "127.0.0.11");
    assert!(
        app.workspace()
            .join("terraform/terraform.tfstate")
            .is_file()
    );
}

#[tokio::test]
async fn a_deploy_whose_plan_was_rejected_is_not_resumed() {
    let app = spawn_approving_app().await;
    let stopped = app.post_as(MAKER, "/deploy", deploy_body(&app)).await;
    assert_eq!(stopped.status, 409, "{:?}", stopped.body);
    let plan_id = stopped.body["awaiting_approval"]
        .as_str()
        .unwrap()
        .to_string();
    let rejected = reject(&app, REVIEWER, &plan_id, json!({"comment": "no"})).await;
    assert_eq!(rejected.status, 200, "{:?}", rejected.body);
    let resume = app.post_as(MAKER, "/deploy/resume", json!({})).await;
    assert_eq!(resume.status, 409, "{:?}", resume.body);
    assert!(
        resume.body["error"].as_str().unwrap().contains("rejected"),
        "{:?}",
        resume.body
    );
}
