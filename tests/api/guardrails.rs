//! Self-service guardrails: workspace owners and quotas per token, policies
//! set on create and PATCH, extend, and temporary workspaces destroyed by
//! the server at expiry (also by a server started after the due time).

use std::time::Duration;

use pgcluster_api::tokens::{Scope, TokenEntry};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

const ADMIN: &str = "pgc_admin-token-for-guardrail-tests";
const ALICE: &str = "pgc_alice-token-for-guardrail-tests";
const BOB: &str = "pgc_bob-token-for-guardrail-tests";
const READER: &str = "pgc_reader-token-for-guardrail-tests";
const PLANNER: &str = "pgc_planner-token-for-guardrail-tests";

fn api_tokens() -> String {
    [
        ("admin", Scope::Admin, ADMIN),
        ("alice", Scope::Apply, ALICE),
        ("bob", Scope::Apply, BOB),
        ("reader", Scope::Read, READER),
        ("planner", Scope::Plan, PLANNER),
    ]
    .map(|(name, scope, token)| TokenEntry::for_token(name, scope, token).config_entry())
    .join(",")
}

async fn spawn_with_tokens() -> TestApp {
    spawn_app_with(AppOptions {
        vars: vec![("API_TOKENS", api_tokens())],
        ..AppOptions::default()
    })
    .await
}

/// An RFC 3339 time `seconds` from now.
fn in_seconds(seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .unwrap()
}

fn at(text: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(text.as_str().expect("a time"), &Rfc3339).unwrap()
}

async fn generate(app: &TestApp, workspace: &str, replicas: Value) -> Answer {
    let body = json!({"bastion_key_pair": "b", "db_key_pair": "d", "replica_count": replicas});
    let path = format!("/workspaces/{workspace}/terraform/generate");
    call(app, Method::POST, ALICE, &path, Some(body)).await
}

async fn call(
    app: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    app.send_as(method, Some(token), path, body).await
}

fn keys(body: &Value) -> Vec<String> {
    body["fields"]
        .as_object()
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn quotas_bound_a_tokens_workspaces_and_database_hosts_and_not_another_tokens() {
    let app = spawn_with_tokens().await;
    // Only an admin sets quotas; bad limits are named and nothing is stored.
    let refused = call(
        &app,
        Method::PUT,
        ALICE,
        "/quotas/alice",
        Some(json!({"workspaces": 2})),
    )
    .await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    for (body, field) in [
        (json!({"workspaces": -1}), Some("workspaces")),
        (json!({"db_hosts": 2.5}), Some("db_hosts")),
        (json!({"db_hosts": "4"}), Some("db_hosts")),
        (json!({"cpus": 4}), Some("cpus")),
        (json!({}), None),
    ] {
        let bad = call(
            &app,
            Method::PUT,
            ADMIN,
            "/quotas/alice",
            Some(body.clone()),
        )
        .await;
        assert_eq!(bad.status, 400, "{body}: {:?}", bad.body);
        if let Some(field) = field {
            assert_eq!(keys(&bad.body), vec![field.to_string()], "{body}");
        }
    }
    let bad_name = call(
        &app,
        Method::PUT,
        ADMIN,
        "/quotas/no%20such",
        Some(json!({"workspaces": 1})),
    )
    .await;
    assert_eq!(bad_name.status, 400, "{:?}", bad_name.body);
    assert_eq!(
        call(&app, Method::GET, READER, "/quotas", None).await.body["quotas"],
        json!([])
    );

    let set = call(
        &app,
        Method::PUT,
        ADMIN,
        "/quotas/alice",
        Some(json!({"workspaces": 2, "db_hosts": 4})),
    )
    .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["limits"], json!({"workspaces": 2, "db_hosts": 4}));

    // Alice's third workspace is refused, naming the quota; Bob's are not.
    for name in ["a1", "a2"] {
        let created = call(
            &app,
            Method::POST,
            ALICE,
            "/workspaces",
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        assert_eq!(created.body["owner"], "alice");
    }
    let third = call(
        &app,
        Method::POST,
        ALICE,
        "/workspaces",
        Some(json!({"name": "a3"})),
    )
    .await;
    assert_eq!(third.status, 403, "{:?}", third.body);
    assert_eq!(third.body["rule"], "quota");
    assert_eq!(
        third.body["quota"],
        json!({"name": "workspaces", "token": "alice", "limit": 2, "used": 2, "requested": 1})
    );
    assert!(third.body["error"].as_str().unwrap().contains("workspaces"));
    assert_eq!(
        call(&app, Method::GET, ADMIN, "/workspaces/a3", None)
            .await
            .status,
        404
    );
    assert!(!app.data_dir.join("workspaces/a3").exists());
    for name in ["b1", "b2", "b3"] {
        let created = call(
            &app,
            Method::POST,
            BOB,
            "/workspaces",
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }

    // Database hosts: 1 + replica_count per workspace, counted together.
    assert_eq!(generate(&app, "a1", json!(2)).await.status, 200);
    let tfvars = app
        .data_dir
        .join("workspaces/a2/terraform/terraform.tfvars");
    let over = generate(&app, "a2", json!("1")).await;
    assert_eq!(over.status, 403, "{:?}", over.body);
    assert_eq!(
        over.body["quota"],
        json!({"name": "db_hosts", "token": "alice", "limit": 4, "used": 3, "requested": 2})
    );
    assert!(!tfvars.exists(), "nothing is written past a quota");
    assert_eq!(generate(&app, "a2", json!(0)).await.status, 200);
    // A workspace's own hosts count as the new variables ask.
    assert_eq!(generate(&app, "a1", json!(3)).await.status, 403);
    assert_eq!(generate(&app, "a1", json!(1)).await.status, 200);
    let bobs = call(
        &app,
        Method::POST,
        BOB,
        "/workspaces/b1/terraform/generate",
        Some(json!({"bastion_key_pair": "b", "db_key_pair": "d", "replica_count": 8})),
    )
    .await;
    assert_eq!(bobs.status, 200, "{:?}", bobs.body);

    let listed = call(&app, Method::GET, READER, "/quotas", None).await;
    assert_eq!(
        listed.body["quotas"],
        json!([{"token": "alice", "limits": {"workspaces": 2, "db_hosts": 4},
                "used": {"workspaces": 2, "db_hosts": 3}}])
    );
    // Without the quota, the third workspace is created.
    assert_eq!(
        call(&app, Method::DELETE, ADMIN, "/quotas/alice", None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&app, Method::DELETE, ADMIN, "/quotas/alice", None)
            .await
            .status,
        404
    );
    let third = call(
        &app,
        Method::POST,
        ALICE,
        "/workspaces",
        Some(json!({"name": "a3"})),
    )
    .await;
    assert_eq!(third.status, 201, "{:?}", third.body);
}

#[tokio::test]
async fn policies_are_set_on_create_and_patch_and_only_an_admin_lifts_one() {
    let app = spawn_with_tokens().await;
    // Self-service: apply creates, read lists, plan may not create or change.
    let planner = call(
        &app,
        Method::POST,
        PLANNER,
        "/workspaces",
        Some(json!({"name": "p"})),
    )
    .await;
    assert_eq!(planner.status, 403);
    let expires = in_seconds(7200);
    let created = call(
        &app,
        Method::POST,
        ALICE,
        "/workspaces",
        Some(json!({"name": "temp", "approval_required": true, "expires_at": expires})),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["owner"], "alice");
    assert_eq!(created.body["approval_required"], true);
    assert_eq!(created.body["state"], "active");
    assert_eq!(at(&created.body["expires_at"]), at(&json!(expires)));
    let listed = call(&app, Method::GET, READER, "/workspaces", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["workspaces"][1]["owner"], "alice");
    for body in [
        json!({"name": "past", "expires_at": in_seconds(-5)}),
        json!({"name": "far", "expires_at": in_seconds(200 * 3600)}),
        json!({"name": "bad", "expires_at": "next tuesday"}),
    ] {
        let refused = call(&app, Method::POST, ALICE, "/workspaces", Some(body.clone())).await;
        assert_eq!(refused.status, 400, "{body}: {:?}", refused.body);
        assert_eq!(
            keys(&refused.body),
            vec!["expires_at".to_string()],
            "{body}"
        );
    }
    assert_eq!(
        call(&app, Method::GET, ADMIN, "/workspaces", None)
            .await
            .body["workspaces"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing created by refused requests"
    );

    // Bad changes are named and change nothing.
    let before = call(&app, Method::GET, READER, "/workspaces/temp", None)
        .await
        .body;
    for (body, field) in [
        (json!({"expires_at": "tomorrow"}), Some("expires_at")),
        (json!({"expires_at": in_seconds(-60)}), Some("expires_at")),
        (
            json!({"expires_at": in_seconds(500 * 3600)}),
            Some("expires_at"),
        ),
        (
            json!({"approval_required": "no"}),
            Some("approval_required"),
        ),
        (json!({"colour": "blue"}), Some("colour")),
        (json!({}), None),
    ] {
        let refused = call(
            &app,
            Method::PATCH,
            ALICE,
            "/workspaces/temp",
            Some(body.clone()),
        )
        .await;
        assert_eq!(refused.status, 400, "{body}: {:?}", refused.body);
        if let Some(field) = field {
            assert_eq!(keys(&refused.body), vec![field.to_string()], "{body}");
        }
    }
    let planner = call(
        &app,
        Method::PATCH,
        PLANNER,
        "/workspaces/temp",
        Some(json!({"approval_required": true})),
    )
    .await;
    assert_eq!(planner.status, 403);
    assert_eq!(
        call(&app, Method::GET, READER, "/workspaces/temp", None)
            .await
            .body,
        before
    );

    // Lifting a guardrail is an admin's.
    let off = json!({"approval_required": false});
    let refused = call(
        &app,
        Method::PATCH,
        ALICE,
        "/workspaces/temp",
        Some(off.clone()),
    )
    .await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["rule"], "admin");
    let lifted = call(&app, Method::PATCH, ADMIN, "/workspaces/temp", Some(off)).await;
    assert_eq!(lifted.status, 200, "{:?}", lifted.body);
    assert_eq!(lifted.body["approval_required"], false);
    let on = call(
        &app,
        Method::PATCH,
        ALICE,
        "/workspaces/temp",
        Some(json!({"approval_required": true})),
    )
    .await;
    assert_eq!(on.body["approval_required"], true);
    let never = json!({"expires_at": null});
    assert_eq!(
        call(
            &app,
            Method::PATCH,
            ALICE,
            "/workspaces/temp",
            Some(never.clone())
        )
        .await
        .status,
        403
    );
    let far = json!({"expires_at": in_seconds(500 * 3600)});
    assert_eq!(
        call(&app, Method::PATCH, ADMIN, "/workspaces/temp", Some(far))
            .await
            .status,
        200
    );
    let permanent = call(&app, Method::PATCH, ADMIN, "/workspaces/temp", Some(never)).await;
    assert_eq!(permanent.status, 200, "{:?}", permanent.body);
    assert_eq!(permanent.body["expires_at"], Value::Null);

    // Extend: only a temporary workspace, within the configured maximum.
    assert_eq!(
        call(
            &app,
            Method::POST,
            ALICE,
            "/workspaces/temp/extend",
            Some(json!({"hours": json!(2)}))
        )
        .await
        .status,
        409
    );
    let soon = in_seconds(3600);
    call(
        &app,
        Method::PATCH,
        ALICE,
        "/workspaces/temp",
        Some(json!({"expires_at": soon})),
    )
    .await;
    for hours in [json!(0), json!(-3), json!(169), json!("2")] {
        let refused = call(
            &app,
            Method::POST,
            ALICE,
            "/workspaces/temp/extend",
            Some(json!({"hours": hours.clone()})),
        )
        .await;
        assert_eq!(refused.status, 400, "{hours}: {:?}", refused.body);
        assert!(
            refused.body["error"].as_str().unwrap().contains("hours"),
            "{:?}",
            refused.body
        );
    }
    let extended = call(
        &app,
        Method::POST,
        ALICE,
        "/workspaces/temp/extend",
        Some(json!({"hours": json!(2)})),
    )
    .await;
    assert_eq!(extended.status, 200, "{:?}", extended.body);
    assert_eq!(
        at(&extended.body["expires_at"]) - at(&json!(soon)),
        time::Duration::hours(2)
    );
    let reader = call(
        &app,
        Method::POST,
        READER,
        "/workspaces/temp/extend",
        Some(json!({"hours": 1})),
    )
    .await;
    assert_eq!(reader.status, 403);

    // `default` takes its approval from the configuration and never expires.
    let default = call(
        &app,
        Method::PATCH,
        ADMIN,
        "/workspaces/default",
        Some(json!({"approval_required": true})),
    )
    .await;
    assert_eq!(default.status, 400, "{:?}", default.body);
    assert_eq!(keys(&default.body), vec!["approval_required".to_string()]);
    // Deleting stays an admin's.
    assert_eq!(
        call(&app, Method::DELETE, ALICE, "/workspaces/temp", None)
            .await
            .status,
        403
    );
    assert_eq!(
        call(&app, Method::DELETE, ADMIN, "/workspaces/temp", None)
            .await
            .status,
        200
    );
}

/// Builds the slow stack's two resources in `workspace` (created first).
async fn build(app: &TestApp, workspace: &str, expires_at: &str, delay: u64) {
    let created = app
        .post(
            "/workspaces",
            json!({"name": workspace, "expires_at": expires_at}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let prefix = format!("/workspaces/{workspace}");
    let generated = app
        .post(
            &format!("{prefix}/terraform/generate"),
            json!({"delay": delay}),
        )
        .await;
    assert_eq!(generated.status, 200, "{:?}", generated.body);
    for step in ["init", "plan"] {
        let ran = app
            .post(&format!("{prefix}/terraform/{step}"), json!({}))
            .await;
        assert_eq!(ran.status, 200, "{step}: {:?}", ran.body);
    }
}

/// Waits (up to 2 minutes) until the workspace is `expired`; its record.
async fn wait_expired(app: &TestApp, workspace: &str) -> Value {
    for _ in 0..1200 {
        let info = app.get(&format!("/workspaces/{workspace}")).await.body;
        if info["state"] == "expired" {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let destroys = destroy_jobs(app, workspace).await;
    panic!("workspace {workspace} did not expire; destroy jobs: {destroys:?}");
}

async fn destroy_jobs(app: &TestApp, workspace: &str) -> Vec<Value> {
    let jobs = app
        .get(&format!(
            "/jobs?workspace={workspace}&kind=terraform.destroy"
        ))
        .await
        .body;
    jobs["jobs"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_workspace_busy_at_expiry_is_destroyed_by_the_server_once_its_job_ends() {
    let app = spawn_slow_stack_app(vec![("EXPIRY_SCHEDULER_SECONDS", "1".into())]).await;
    build(&app, "brief", &in_seconds(3600), 4).await;
    let apply = app
        .post("/workspaces/brief/terraform/apply", json!({"async": true}))
        .await;
    assert_eq!(apply.status, 202, "{:?}", apply.body);
    // Due while the apply still runs.
    let due = app
        .send_as(
            Method::PATCH,
            None,
            "/workspaces/brief",
            Some(json!({"expires_at": in_seconds(1)})),
        )
        .await;
    assert_eq!(due.status, 200, "{:?}", due.body);
    let applied = app
        .wait_for_job(apply.body["job_id"].as_str().unwrap())
        .await;
    assert_eq!(applied["status"], "succeeded", "{applied}");

    let expired = wait_expired(&app, "brief").await;
    assert_eq!(expired["resources"], 0, "{expired}");
    assert!(expired["expired_at"].is_string());
    let destroys = destroy_jobs(&app, "brief").await;
    assert_eq!(destroys.len(), 1, "{destroys:?}");
    assert_eq!(destroys[0]["started_by"], "scheduler");
    assert_eq!(destroys[0]["status"], "succeeded");
    assert!(at(&destroys[0]["created_at"]) >= at(&applied["finished_at"]));
    // Its history stays; new work waits for an extension.
    let history = app.get("/jobs?workspace=brief&kind=terraform.apply").await;
    assert_eq!(history.body["jobs"].as_array().unwrap().len(), 1);
    let refused = app
        .post("/workspaces/brief/terraform/generate", json!({"delay": 0}))
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert!(refused.body["error"].as_str().unwrap().contains("extend"));
    let plan = app
        .post("/workspaces/brief/terraform/plan", json!({}))
        .await;
    assert_eq!(plan.status, 409, "{:?}", plan.body);
    let extended = app
        .post("/workspaces/brief/extend", json!({"hours": 1}))
        .await;
    assert_eq!(extended.status, 200, "{:?}", extended.body);
    assert_eq!(extended.body["state"], "active");
    assert!(at(&extended.body["expires_at"]) > OffsetDateTime::now_utc());
}

#[tokio::test]
async fn expiry_due_while_the_server_was_down_is_acted_on_when_it_starts() {
    // The first server never looks at expiry: as if it stopped.
    let first = spawn_slow_stack_app(vec![("EXPIRY_SCHEDULER_SECONDS", "0".into())]).await;
    build(&first, "overnight", &in_seconds(3600), 0).await;
    let applied = first
        .post("/workspaces/overnight/terraform/apply", json!({}))
        .await;
    assert_eq!(applied.status, 200, "{:?}", applied.body);
    let due = first
        .send_as(
            Method::PATCH,
            None,
            "/workspaces/overnight",
            Some(json!({"expires_at": in_seconds(1)})),
        )
        .await;
    assert_eq!(due.status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = first.get("/workspaces/overnight").await.body;
    assert_eq!(info["state"], "active");
    assert_eq!(info["resources"], 2);

    let stack = repo().join("tests/fixtures/slow_stack");
    let second = spawn_app_sharing(
        &first,
        Tools::RealTerraform,
        vec![
            ("TERRAFORM_DIR", stack.display().to_string()),
            ("EXPIRY_SCHEDULER_SECONDS", "3600".into()),
        ],
    )
    .await;
    // The first look is at start-up, not an interval later.
    let expired = wait_expired(&second, "overnight").await;
    assert_eq!(expired["resources"], 0);
    let destroys = destroy_jobs(&second, "overnight").await;
    assert_eq!(destroys.len(), 1);
    assert_eq!(destroys[0]["started_by"], "scheduler");
}
