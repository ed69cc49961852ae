//! Named workspaces: each its own stack copy, tfvars, state, plans and lock.

use serde_json::json;

use crate::helpers::*;

async fn flow(app: &TestApp, ws: &str, environment: &str) {
    let generate = app
        .post(
            &format!("/workspaces/{ws}/terraform/generate"),
            json!({"bastion_key_pair": "b", "db_key_pair": "d", "environment": environment}),
        )
        .await;
    assert_eq!(generate.status, 200, "{:?}", generate.body);
    for step in ["init", "plan", "apply"] {
        let answer = app
            .post_empty(&format!("/workspaces/{ws}/terraform/{step}"))
            .await;
        assert_eq!(answer.status, 200, "{ws} {step}: {:?}", answer.body);
    }
}

#[tokio::test]
async fn two_workspaces_never_see_each_others_files_or_state() {
    let app = spawn_app_with(AppOptions {
        tools: Tools::RealTerraform,
        ..AppOptions::default()
    })
    .await;
    for name in ["staging", "prod"] {
        let created = app
            .post("/workspaces", json!({"name": name, "stack": "stack"}))
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    flow(&app, "staging", "staging").await;
    flow(&app, "prod", "prod").await;
    for (ws, environment) in [("staging", "staging"), ("prod", "prod")] {
        let output = app
            .post_empty(&format!("/workspaces/{ws}/terraform/output"))
            .await;
        assert_eq!(output.body["outputs"]["environment"], environment);
        let root = app.data_dir.join("workspaces").join(ws);
        let tfvars = std::fs::read_to_string(root.join("terraform/terraform.tfvars")).unwrap();
        assert!(tfvars.contains(&format!("environment = \"{environment}\"")));
        assert!(root.join("terraform/terraform.tfstate").is_file());
    }
    // The original routes act on `default`, which has no state.
    let default = app.post_empty("/terraform/output").await;
    assert_eq!(default.body["outputs"], json!({}));
    let list = app.get("/workspaces").await.body;
    let names: Vec<&str> = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "prod", "staging"]);
    assert_eq!(
        app.get("/workspaces/prod").await.body["resources"],
        0,
        "outputs only, no resources"
    );
}

#[tokio::test]
async fn a_workspace_with_resources_in_its_state_is_not_deleted() {
    let app = spawn_slow_stack_app(Vec::new()).await;
    assert_eq!(
        app.post("/workspaces", json!({"name": "temp"}))
            .await
            .status,
        201
    );
    let generate = app
        .post("/workspaces/temp/terraform/generate", json!({"delay": 0}))
        .await;
    assert_eq!(generate.status, 200, "{:?}", generate.body);
    for step in ["init", "plan", "apply"] {
        let answer = app
            .post_empty(&format!("/workspaces/temp/terraform/{step}"))
            .await;
        assert_eq!(answer.status, 200, "{step}: {:?}", answer.body);
    }
    let refused = app
        .client
        .delete(format!("{}/workspaces/temp", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("destroy"));
    assert_eq!(
        app.post(
            "/workspaces/temp/terraform/destroy",
            json!({"confirm": "temp"})
        )
        .await
        .status,
        200
    );
    let deleted = app
        .client
        .delete(format!("{}/workspaces/temp", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(!app.data_dir.join("workspaces/temp").exists());
    assert_eq!(
        app.post_empty("/workspaces/temp/terraform/plan")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn workspace_names_stacks_and_existence_are_checked() {
    let app = spawn_app().await;
    for (body, status) in [
        (json!({"name": "../etc"}), 400),
        (json!({"name": "Prod"}), 400),
        (json!({"name": "ok", "stack": "../../etc"}), 400),
        (json!({"name": "ok", "stack": "nope"}), 400),
        (json!({"name": "ok", "extra": 1}), 400),
    ] {
        let answer = app.post("/workspaces", body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.body);
    }
    assert_eq!(
        app.post("/workspaces", json!({"name": "ok"})).await.status,
        201
    );
    assert_eq!(
        app.post("/workspaces", json!({"name": "ok"})).await.status,
        409
    );
    assert_eq!(
        app.post_empty("/workspaces/missing/terraform/init")
            .await
            .status,
        404
    );
    assert_eq!(
        app.post_empty("/workspaces/BAD/terraform/init")
            .await
            .status,
        400
    );
    let default = app
        .client
        .delete(format!("{}/workspaces/default", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(default.status(), 400);
}

#[tokio::test]
async fn a_busy_workspace_does_not_block_another() {
    let app = spawn_app().await;
    assert_eq!(
        app.post("/workspaces", json!({"name": "one"})).await.status,
        201
    );
    assert_eq!(
        app.post("/workspaces", json!({"name": "two"})).await.status,
        201
    );
    app.fake("sleep", "2");
    let first = app
        .post("/workspaces/one/terraform/plan", json!({"async": true}))
        .await;
    assert_eq!(first.status, 202);
    assert_eq!(
        app.post("/workspaces/one/terraform/plan", json!({"async": true}))
            .await
            .status,
        409
    );
    let other = app
        .post("/workspaces/two/terraform/plan", json!({"async": true}))
        .await;
    assert_eq!(other.status, 202, "{:?}", other.body);
    let job = app
        .wait_for_job(other.body["job_id"].as_str().unwrap())
        .await;
    assert_eq!(job["workspace"], "two");
    let listed = app.get("/jobs?workspace=one").await.body;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_workspace_while_runs_start_on_it_never_fails_the_server() {
    let app = spawn_app().await;
    let url = |path: &str| format!("{}{path}", app.address);
    for round in 0..20 {
        let created = app.post("/workspaces", json!({"name": "race"})).await;
        assert_eq!(created.status, 201, "round {round}: {:?}", created.body);
        let mut inits = tokio::task::JoinSet::new();
        for run in ["init", "init", "init", "generate", "generate"] {
            let client = app.client.clone();
            let target = url(&format!("/workspaces/race/terraform/{run}"));
            let body = json!({"bastion_key_pair": "b", "db_key_pair": "d"});
            inits.spawn(async move {
                let answer = client.post(target).json(&body).send().await.unwrap();
                answer.status().as_u16()
            });
        }
        let delete = || async {
            let answer = app.client.delete(url("/workspaces/race")).send().await;
            answer.unwrap().status().as_u16()
        };
        let deleted = delete().await;
        assert!(
            [200, 409].contains(&deleted),
            "round {round}: delete {deleted}"
        );
        for status in inits.join_all().await {
            // Done, refused while the workspace is busy, gone, or failed
            // because its directory went under it; never a server error.
            assert!(
                [200, 400, 404, 409].contains(&status),
                "round {round}: init or generate {status}"
            );
        }
        // Deleted once nothing holds it; then it can be made again.
        while app.get("/workspaces/race").await.status == 200 {
            let again = delete().await;
            assert!([200, 409].contains(&again), "round {round}: delete {again}");
        }
        // A run that started on it afterwards brought no directory back.
        let root = app.data_dir.join("workspaces/race");
        assert!(!root.exists(), "round {round}: {root:?} is back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_created_by_several_requests_at_once_is_created_once() {
    let app = spawn_app().await;
    for round in 0..20 {
        let name = format!("twin{round}");
        let mut creates = tokio::task::JoinSet::new();
        for stack in ["stack", "slow_stack", "stack", "slow_stack"] {
            let (client, url) = (app.client.clone(), format!("{}/workspaces", app.address));
            let body = json!({"name": name, "stack": stack});
            creates.spawn(async move {
                let answer = client.post(url).json(&body).send().await.unwrap();
                let status = answer.status().as_u16();
                (status, answer.json::<serde_json::Value>().await.unwrap())
            });
        }
        let answers = creates.join_all().await;
        let created: Vec<_> = answers
            .iter()
            .filter(|(status, _)| *status == 201)
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|(status, _)| [201, 409].contains(status)),
            "round {round}: {answers:?}"
        );
        // The one told it was created has the stack it asked for.
        let workspace = app.get(&format!("/workspaces/{name}")).await;
        assert_eq!(workspace.body["stack"], created[0].1["stack"]);
        assert_eq!(created[0].1["busy_with"], serde_json::Value::Null);
    }
}
