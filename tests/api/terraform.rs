//! `/terraform/*` with the fake terraform: shapes, flags, plan bookkeeping.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn generate_writes_tfvars_and_reports_used_and_default_variables() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "bastion-key", "db_key_pair": "db-key",
                   "replica_count": "3", "allowed_cidrs": ["10.0.0.0/8"], "tags": {"team": "db"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer.body["message"],
        "terraform.tfvars file generated successfully"
    );
    assert_eq!(answer.body["used_variables"]["replica_count"], "3");
    assert_eq!(
        answer.body["default_variables"],
        json!({"environment": "test"})
    );
    let tfvars =
        std::fs::read_to_string(app.workspace().join("terraform/terraform.tfvars")).unwrap();
    assert!(
        tfvars.contains("bastion_key_pair = \"bastion-key\"\n"),
        "{tfvars}"
    );
    assert!(tfvars.contains("replica_count = 3\n"), "{tfvars}");
    assert!(
        tfvars.contains("allowed_cidrs = [\"10.0.0.0/8\"]\n"),
        "{tfvars}"
    );
    assert!(tfvars.contains("tags = {\"team\" = \"db\"}\n"), "{tfvars}");
    // The stack was copied into the workspace next to its tfvars.
    assert!(app.workspace().join("terraform/main.tf").is_file());
}

#[tokio::test]
async fn generate_lists_unknown_and_missing_variables_as_arrays() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "k", "colour": "red", "size": 1}),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["unknown_variables"], json!(["colour", "size"]));
    assert_eq!(answer.body["missing_variables"], json!(["db_key_pair"]));
    assert!(answer.body["error"].as_str().unwrap().contains("colour"));
    assert!(!app.workspace().join("terraform/terraform.tfvars").exists());
}

#[tokio::test]
async fn generate_checks_values_against_the_declared_types() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "k", "db_key_pair": "k", "replica_count": "two",
                   "allowed_cidrs": "10.0.0.0/8", "tags": {"a": 1}}),
        )
        .await;
    assert_eq!(answer.status, 400);
    let fields = &answer.body["fields"];
    assert!(fields["replica_count"].as_str().unwrap().contains("number"));
    assert!(fields["allowed_cidrs"].as_str().unwrap().contains("list"));
    // map(string) accepts a number: terraform converts it.
    assert!(fields.get("tags").is_none(), "{fields}");
}

#[tokio::test]
async fn generate_without_a_body_is_a_400() {
    let app = spawn_app().await;
    let answer = app.post_empty("/terraform/generate").await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .contains("JSON object")
    );
}

#[tokio::test]
async fn init_plan_apply_destroy_run_with_the_documented_flags() {
    let app = spawn_app().await;
    app.generate().await;

    let init = app.post_empty("/terraform/init").await;
    assert_eq!(init.status, 200, "{:?}", init.body);
    assert_eq!(
        init.body["message"],
        "Terraform command 'init' executed successfully"
    );
    assert!(init.body["job_id"].is_string());
    assert!(init.body.get("output").is_none(), "output only when asked");
    let argv = read_lines(&app.last_call().join("argv"));
    assert_eq!(argv, ["init", "-input=false", "-no-color"]);
    let env = std::fs::read_to_string(app.last_call().join("env")).unwrap();
    assert!(env.contains("TF_IN_AUTOMATION=1") && env.contains("CHECKPOINT_DISABLE=1"));
    let cwd = std::fs::read_to_string(app.last_call().join("cwd")).unwrap();
    assert!(
        cwd.trim().ends_with("workspaces/default/terraform"),
        "{cwd}"
    );

    let plan = app.post("/terraform/plan", json!({"output": true})).await;
    assert_eq!(plan.status, 200, "{:?}", plan.body);
    assert_eq!(plan.body["changes"], true, "exit code 2 means changes");
    assert!(
        plan.body["output"]
            .as_str()
            .unwrap()
            .contains("Plan: 1 to add")
    );
    let argv = read_lines(&app.last_call().join("argv"));
    assert_eq!(
        &argv[..4],
        ["plan", "-input=false", "-no-color", "-detailed-exitcode"]
    );
    let written = argv[4]
        .strip_prefix("-out=")
        .expect("plan saves a plan file")
        .to_string();
    // Once summarized, the saved plan is named after its job.
    let job_id = plan.body["job_id"].as_str().unwrap();
    let plan_file = app.workspace().join(format!("plans/{job_id}.tfplan"));
    assert!(plan_file.is_file());
    assert!(!std::path::Path::new(&written).exists());
    let plan_file = plan_file.display().to_string();

    let apply = app.post_empty("/terraform/apply").await;
    assert_eq!(apply.status, 200, "{:?}", apply.body);
    let argv = read_lines(&app.last_call().join("argv"));
    assert_eq!(argv, ["apply", "-input=false", "-no-color", &plan_file]);
    // The saved plan is consumed: a second apply needs a new plan.
    let again = app.post_empty("/terraform/apply").await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert!(
        again.body["error"]
            .as_str()
            .unwrap()
            .contains("/terraform/plan")
    );

    let destroy = app
        .post("/terraform/destroy", json!({"confirm": "default"}))
        .await;
    assert_eq!(destroy.status, 200, "{:?}", destroy.body);
    let argv = read_lines(&app.last_call().join("argv"));
    assert_eq!(
        argv,
        ["destroy", "-input=false", "-no-color", "-auto-approve"]
    );
}

#[tokio::test]
async fn apply_without_a_saved_plan_is_refused_and_runs_nothing() {
    let app = spawn_app().await;
    let answer = app.post_empty("/terraform/apply").await;
    assert_eq!(answer.status, 409);
    assert!(app.calls().is_empty());
}

#[tokio::test]
async fn apply_refuses_a_plan_made_before_the_tfvars_changed() {
    let app = spawn_app().await;
    app.generate().await;
    assert_eq!(app.post_empty("/terraform/plan").await.status, 200);
    let changed = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "bastion-key", "db_key_pair": "db-key", "replica_count": 3}),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    let calls = app.calls().len();

    let stale = app.post_empty("/terraform/apply").await;
    assert_eq!(stale.status, 409, "{:?}", stale.body);
    let error = stale.body["error"].as_str().unwrap();
    assert!(
        error.contains("terraform.tfvars") && error.contains("plan again"),
        "{error}"
    );
    // A hand edit counts too: the plan records the digest of the file.
    assert_eq!(app.post_empty("/terraform/plan").await.status, 200);
    let tfvars = app.workspace().join("terraform/terraform.tfvars");
    let mut text = std::fs::read_to_string(&tfvars).unwrap();
    text.push_str("replica_count = 1\n");
    std::fs::write(&tfvars, text).unwrap();
    assert_eq!(app.post_empty("/terraform/apply").await.status, 409);
    assert_eq!(app.calls().len(), calls + 1, "only the plan ran");

    // Planned from the current variables, it applies; generating the same
    // variables again leaves the plan valid.
    app.generate().await;
    assert_eq!(app.post_empty("/terraform/plan").await.status, 200);
    app.generate().await;
    let apply = app.post_empty("/terraform/apply").await;
    assert_eq!(apply.status, 200, "{:?}", apply.body);
}

#[tokio::test]
async fn destroy_needs_the_workspace_name_as_confirmation() {
    let app = spawn_app().await;
    app.generate().await;
    for (body, reason) in [
        (json!({}), "is required"),
        (json!({"output": true}), "is required"),
        (json!({"confirm": "prod"}), "does not match"),
        (json!({"confirm": "Default"}), "does not match"),
        (json!({"confirm": ""}), "does not match"),
    ] {
        let answer = app.post("/terraform/destroy", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        let field = answer.body["fields"]["confirm"].as_str().unwrap();
        assert!(field.contains(reason), "{body}: {field}");
        assert!(
            field.contains(r#"{"confirm": "default"}"#),
            "says what to send: {field}"
        );
    }
    let not_a_string = app
        .post("/terraform/destroy", json!({"confirm": true}))
        .await;
    assert_eq!(not_a_string.status, 400, "{:?}", not_a_string.body);
    let elsewhere = app
        .post("/terraform/plan", json!({"confirm": "default"}))
        .await;
    assert_eq!(elsewhere.status, 400, "{:?}", elsewhere.body);
    assert!(elsewhere.body["fields"]["confirm"].is_string());
    assert!(app.calls().is_empty(), "nothing ran without confirmation");

    let confirmed = app
        .post("/terraform/destroy", json!({"confirm": "default"}))
        .await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    assert_eq!(app.calls().len(), 1);
}

#[tokio::test]
async fn a_failed_command_answers_400_with_both_streams_in_details() {
    let app = spawn_app().await;
    app.fake("fail", "");
    let answer = app.post_empty("/terraform/init").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "Terraform command 'init' failed");
    let details = answer.body["details"].as_str().unwrap();
    assert!(details.contains("fake failure on stderr"), "{details}");
    assert!(details.contains("fake failure on stdout"), "{details}");
    assert_eq!(answer.body["status"], "failed");
    let job = app
        .get(&format!(
            "/jobs/{}",
            answer.body["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job.body["exit_code"], 1);
}

#[tokio::test]
async fn a_failed_plan_leaves_no_plan_to_apply() {
    let app = spawn_app().await;
    app.fake("fail", "");
    assert_eq!(app.post_empty("/terraform/plan").await.status, 400);
    app.unfake("fail");
    assert_eq!(app.post_empty("/terraform/apply").await.status, 409);
}

#[tokio::test]
async fn output_returns_parsed_json_with_sensitive_values_masked() {
    let app = spawn_app().await;
    app.fake(
        "outputs",
        r#"{"primary_db_addr": {"sensitive": false, "type": "string", "value": "10.0.1.5"},
            "replica_db_addresses": {"sensitive": false, "type": ["list", "string"], "value": ["10.0.2.5"]},
            "db_password": {"sensitive": true, "type": "string", "value": "hunter2"}}"#,
    );
    let answer = app.post_empty("/terraform/output").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer.body["message"],
        "Terraform output command executed successfully"
    );
    assert_eq!(answer.body["outputs"]["primary_db_addr"], "10.0.1.5");
    assert_eq!(
        answer.body["outputs"]["replica_db_addresses"],
        json!(["10.0.2.5"])
    );
    assert_eq!(answer.body["outputs"]["db_password"], "(sensitive value)");
    let text = answer.body["output"].as_str().unwrap();
    assert!(text.contains("primary_db_addr = \"10.0.1.5\""), "{text}");
    assert!(!answer.body.to_string().contains("hunter2"));
    let argv = read_lines(&app.last_call().join("argv"));
    assert_eq!(argv, ["output", "-no-color", "-json"]);
}

#[tokio::test]
async fn output_that_is_not_json_fails_the_job_with_a_reason() {
    let app = spawn_app().await;
    app.fake("outputs", "this is not json");
    let answer = app.post_empty("/terraform/output").await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body["details"]
            .as_str()
            .unwrap()
            .contains("not a JSON object")
    );
}

#[tokio::test]
async fn output_must_be_a_real_boolean() {
    let app = spawn_app().await;
    let answer = app.post("/terraform/init", json!({"output": "yes"})).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body["error"].as_str().unwrap().contains("output"));
    assert!(app.calls().is_empty());
}

#[tokio::test]
async fn unknown_options_are_rejected_by_name() {
    let app = spawn_app().await;
    let answer = app.post("/terraform/plan", json!({"outptu": true})).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body["error"].as_str().unwrap().contains("outptu"));
}

#[tokio::test]
async fn async_mode_answers_202_with_the_job_location() {
    let app = spawn_app().await;
    let answer = app.post("/terraform/init", json!({"async": true})).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.body["job_id"].as_str().unwrap().to_string();
    assert_eq!(answer.headers["location"], format!("/jobs/{id}").as_str());
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["kind"], "terraform.init");
    let log = app.get(&format!("/jobs/{id}/log")).await;
    let lines = log.body["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["text"] == "fake terraform init done" && l["stream"] == "stdout")
    );
    assert!(lines.iter().any(|l| l["stream"] == "stderr"));
    let numbers: Vec<u64> = lines.iter().map(|l| l["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    let after = app.get(&format!("/jobs/{id}/log?after=1")).await;
    assert_eq!(
        after.body["lines"].as_array().unwrap().len(),
        lines.len() - 1
    );
}

#[tokio::test]
async fn unknown_routes_and_jobs_answer_json_errors() {
    let app = spawn_app().await;
    assert_eq!(app.get("/nope").await.status, 404);
    assert_eq!(app.get("/jobs/not-a-uuid").await.status, 400);
    assert_eq!(
        app.get("/jobs/00000000-0000-4000-8000-000000000000")
            .await
            .status,
        404
    );
    assert_eq!(app.get("/terraform/plan").await.status, 405);
}

#[tokio::test]
async fn the_original_tools_generate_request_works_against_the_aws_stack() {
    let app = spawn_app_with(AppOptions {
        vars: vec![(
            "TERRAFORM_DIR",
            repo().join("terraform/aws").display().to_string(),
        )],
        ..AppOptions::default()
    })
    .await;
    let answer = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "bastion-key", "db_key_pair": "db-key", "environment": "staging",
                   "replica_count": "2", "db_instance_type": "t2.medium"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(answer.body["default_variables"]["region"].is_string());
    let tfvars =
        std::fs::read_to_string(app.workspace().join("terraform/terraform.tfvars")).unwrap();
    assert!(tfvars.contains("replica_count = 2\n"), "{tfvars}");
    assert!(app.workspace().join("terraform/compute.tf").is_file());
}

#[tokio::test]
async fn generate_applies_the_stacks_validation_blocks_it_can_evaluate() {
    let app = spawn_app().await;
    app.generate().await;
    let before = snapshot(&app.workspace());
    for bad in [json!(-1), json!("-1")] {
        let answer = app
            .post(
                "/terraform/generate",
                json!({"bastion_key_pair": "k", "db_key_pair": "k", "replica_count": bad}),
            )
            .await;
        assert_eq!(answer.status, 400, "{:?}", answer.body);
        assert_eq!(
            answer.body["fields"]["replica_count"],
            "The replica_count must not be negative."
        );
    }
    let empty = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": " ", "db_key_pair": "k"}),
        )
        .await;
    assert_eq!(empty.status, 400);
    assert!(
        empty.body["fields"]["bastion_key_pair"]
            .as_str()
            .unwrap()
            .contains("empty")
    );
    assert!(snapshot(&app.workspace()) == before, "nothing rewritten");
}

#[tokio::test]
async fn ready_names_each_check_and_fails_with_503_naming_the_broken_ones() {
    let app = spawn_app().await;
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    assert_eq!(ready.body["checks"]["job_store"]["ok"], true);
    assert!(
        ready.body["checks"]["terraform"]["detail"]
            .as_str()
            .unwrap()
            .contains("fake terraform")
    );

    let broken = spawn_app_with(AppOptions {
        vars: vec![
            ("TERRAFORM_BINARY", "/nonexistent/terraform".into()),
            ("ANSIBLE_VAULT_PASSWORD", String::new()),
        ],
        ..AppOptions::default()
    })
    .await;
    let ready = broken.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.body["failing"],
        json!(["terraform", "vault_password"])
    );
}

const SENSITIVE_OUTPUTS: &str = r#"{
  "primary_db_addr": {"sensitive": false, "type": "string", "value": "10.0.1.5"},
  "db_password": {"sensitive": true, "type": "string", "value": "hunter2-sensitive"}
}"#;

#[tokio::test]
async fn sensitive_outputs_never_reach_the_job_log_or_the_store() {
    let app = spawn_app().await;
    app.fake("outputs", SENSITIVE_OUTPUTS);
    let answer = app.post("/terraform/output", json!({"output": true})).await;
    assert_eq!(answer.status, 200);
    let id = answer.body["job_id"].as_str().unwrap();
    let log = app.get(&format!("/jobs/{id}/log")).await.body.to_string();
    let job = app.get(&format!("/jobs/{id}")).await.body.to_string();
    for text in [answer.body.to_string(), log, job] {
        assert!(!text.contains("hunter2-sensitive"), "{text}");
    }
    for (path, bytes) in snapshot_with_logs(&app.data_dir) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains("hunter2-sensitive"),
            "{}",
            path.display()
        );
    }
}

#[tokio::test]
async fn only_an_authenticated_admin_sees_sensitive_outputs() {
    use pgcluster_api::tokens::{Scope, TokenEntry};
    let (admin, reader) = (
        "pgc_admin-token-for-outputs",
        "pgc_reader-token-for-outputs",
    );
    let tokens = [
        TokenEntry::for_token("admin", Scope::Admin, admin).config_entry(),
        TokenEntry::for_token("reader", Scope::Read, reader).config_entry(),
    ]
    .join(",");
    let app = spawn_app_with(AppOptions {
        vars: vec![("API_TOKENS", tokens)],
        ..AppOptions::default()
    })
    .await;
    app.fake("outputs", SENSITIVE_OUTPUTS);
    let as_reader = app.post_as(reader, "/terraform/output", json!({})).await;
    assert_eq!(
        as_reader.body["outputs"]["db_password"],
        "(sensitive value)"
    );
    let as_admin = app.post_as(admin, "/terraform/output", json!({})).await;
    assert_eq!(as_admin.body["outputs"]["db_password"], "hunter2-sensitive");
    assert!(
        as_admin.body["output"]
            .as_str()
            .unwrap()
            .contains("hunter2-sensitive")
    );
    // Without authentication configured nobody is an authenticated admin.
    let open = spawn_app().await;
    open.fake("outputs", SENSITIVE_OUTPUTS);
    let anonymous = open.post("/terraform/output", json!({})).await;
    assert_eq!(
        anonymous.body["outputs"]["db_password"],
        "(sensitive value)"
    );
}
