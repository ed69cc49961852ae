//! The real terraform and ansible-playbook. The test command installs both
//! (scripts/tools.sh); these tests fail rather than skip when they are missing.

use std::process::Command;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_whole_terraform_flow_runs_on_real_terraform() {
    let app = spawn_app_with(AppOptions {
        tools: Tools::RealTerraform,
        ..AppOptions::default()
    })
    .await;
    let generate = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "b", "db_key_pair": "d", "replica_count": "2",
                   "environment": "it's \\ real", "tags": {"team": "db"}}),
        )
        .await;
    assert_eq!(generate.status, 200, "{:?}", generate.body);

    let init = app.post("/terraform/init", json!({"output": true})).await;
    assert_eq!(init.status, 200, "{:?}", init.body);
    assert!(
        init.body["output"]
            .as_str()
            .unwrap()
            .contains("Terraform has been successfully initialized")
    );

    let plan = app.post("/terraform/plan", json!({"output": true})).await;
    assert_eq!(plan.status, 200, "{:?}", plan.body);
    assert_eq!(plan.body["changes"], true);

    let apply = app.post_empty("/terraform/apply").await;
    assert_eq!(apply.status, 200, "{:?}", apply.body);
    assert!(
        app.workspace()
            .join("terraform/terraform.tfstate")
            .is_file()
    );

    let output = app.post_empty("/terraform/output").await;
    assert_eq!(output.status, 200, "{:?}", output.body);
    let outputs = &output.body["outputs"];
    assert_eq!(outputs["bastion_eip_address"], "127.0.0.10");
    assert_eq!(
        outputs["replica_db_addresses"],
        json!(["127.0.1.1", "127.0.1.2"])
    );
    // The backslash and quote went through HCL escaping and came back intact.
    assert_eq!(outputs["environment"], "it's \\ real");
    assert_eq!(outputs["tags"], json!({"team": "db"}));
    assert_eq!(outputs["secret_token"], "(sensitive value)");

    // A second plan sees no changes (exit code 0 is success too).
    let replan = app.post_empty("/terraform/plan").await;
    assert_eq!(replan.status, 200, "{:?}", replan.body);
    assert_eq!(replan.body["changes"], false);

    let destroy = app
        .post("/terraform/destroy", json!({"confirm": "default"}))
        .await;
    assert_eq!(destroy.status, 200, "{:?}", destroy.body);
    let after = app.post_empty("/terraform/output").await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body["outputs"], json!({}));
}

#[tokio::test]
async fn a_real_terraform_error_is_reported_with_its_message() {
    let app = spawn_app_with(AppOptions {
        tools: Tools::RealTerraform,
        ..AppOptions::default()
    })
    .await;
    let generate = app
        .post(
            "/terraform/generate",
            json!({"bastion_key_pair": "b", "db_key_pair": "d", "allowed_cidrs": ["not-a-cidr"]}),
        )
        .await;
    assert_eq!(
        generate.status, 200,
        "cidrhost() is Terraform's to evaluate: the check is left to plan"
    );
    assert_eq!(app.post_empty("/terraform/init").await.status, 200);
    let plan = app.post_empty("/terraform/plan").await;
    assert_eq!(plan.status, 400, "{:?}", plan.body);
    assert_eq!(plan.body["error"], "Terraform command 'plan' failed");
    let details = plan.body["details"].as_str().unwrap();
    assert!(
        details.contains("Every allowed_cidrs entry must be a CIDR block"),
        "{details}"
    );
    assert_eq!(app.post_empty("/terraform/apply").await.status, 409);
}

fn ansible_playbook() -> String {
    std::env::var("ANSIBLE_PLAYBOOK_BINARY").unwrap_or_else(|_| "ansible-playbook".into())
}

#[test]
fn every_shipped_playbook_passes_a_real_syntax_check() {
    for playbook in ["site.yml", "status.yml", "operate.yml"] {
        let home = tempfile::tempdir().unwrap();
        let output = Command::new(ansible_playbook())
            .args(["--syntax-check", "-i", "localhost,"])
            .arg(repo().join("ansible").join(playbook))
            .env("ANSIBLE_HOME", home.path())
            .env("ANSIBLE_LOCAL_TEMP", home.path().join("tmp"))
            .env("ANSIBLE_ROLES_PATH", repo().join("ansible/roles"))
            .output()
            .expect("ansible-playbook runs (the test command installs it)");
        assert!(
            output.status.success(),
            "syntax check of {playbook} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn every_shipped_stack_is_terraform_fmt_clean() {
    let output = Command::new(real_terraform())
        .args(["fmt", "-check", "-recursive", "-diff"])
        .arg(repo().join("terraform"))
        .output()
        .expect("terraform runs");
    assert!(
        output.status.success(),
        "terraform fmt -check failed:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn every_shipped_stack_declares_the_variables_generate_needs() {
    for stack in ["aws", "local"] {
        let dir = repo().join("terraform").join(stack);
        let variables = pgcluster_api::domain::StackVariables::from_dir(&dir)
            .unwrap_or_else(|e| panic!("{stack}: {e}"));
        for name in ["bastion_key_pair", "db_key_pair", "replica_count"] {
            assert!(variables.get(name).is_some(), "{stack} lacks {name}");
        }
    }
}

/// Cancel during a real apply whose resource is still being created: the job
/// ends `cancelled`, terraform released its state lock, and the next plan on
/// the workspace works without `-lock=false` or `force-unlock`.
#[tokio::test]
async fn cancelling_a_real_apply_releases_the_state_lock() {
    let app = spawn_slow_stack_app(vec![("CANCEL_GRACE_SECS", "20".into())]).await;
    assert_eq!(
        app.post("/terraform/generate", json!({"delay": 300}))
            .await
            .status,
        200
    );
    let init = app.post_empty("/terraform/init").await;
    assert_eq!(
        init.status, 200,
        "init with the null provider mirror (TF_CLI_CONFIG_FILE): {:?}",
        init.body
    );
    assert_eq!(app.post_empty("/terraform/plan").await.status, 200);
    let apply = app.post("/terraform/apply", json!({"async": true})).await;
    assert_eq!(apply.status, 202, "{:?}", apply.body);
    let id = apply.body["job_id"].as_str().unwrap().to_string();

    // Wait until the provisioner is running.
    let creating = app
        .wait_for_log(&id, "Provisioning with 'local-exec'")
        .await
        && app.wait_for_log(&id, "creating").await;
    assert!(creating, "the resource is being created");
    let cancel = app.post_empty(&format!("/jobs/{id}/cancel")).await;
    assert_eq!(cancel.status, 200);
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "cancelled", "{job}");

    // The state lock is free: a new plan (with a short delay) works.
    assert_eq!(
        app.post("/terraform/generate", json!({"delay": 0}))
            .await
            .status,
        200
    );
    let plan = app.post("/terraform/plan", json!({"output": true})).await;
    assert_eq!(plan.status, 200, "{:?}", plan.body);
    assert!(
        !plan
            .body
            .to_string()
            .contains("Error acquiring the state lock")
    );
    assert_eq!(app.post_empty("/terraform/apply").await.status, 200);
    assert_eq!(
        app.post("/terraform/destroy", json!({"confirm": "default"}))
            .await
            .status,
        200
    );
}

/// The provider process killed from outside during a real apply: terraform
/// fails the apply (it reports the cancelled plugin request), the job ends
/// `failed` with that in its details, and the state lock is released: the
/// next plan and apply work.
#[tokio::test]
async fn a_real_apply_whose_provider_is_killed_fails_and_releases_the_state_lock() {
    let app = spawn_slow_stack_app(Vec::new()).await;
    let generated = app.post("/terraform/generate", json!({"delay": 5})).await;
    assert_eq!(generated.status, 200, "{:?}", generated.body);
    let init = app.post_empty("/terraform/init").await;
    assert_eq!(init.status, 200, "{:?}", init.body);
    assert_eq!(app.post_empty("/terraform/plan").await.status, 200);
    let apply = app.post("/terraform/apply", json!({"async": true})).await;
    assert_eq!(apply.status, 202, "{:?}", apply.body);
    let id = apply.body["job_id"].as_str().unwrap().to_string();
    assert!(
        app.wait_for_log(&id, "creating").await,
        "the first resource is being created"
    );
    // This job's terraform (its pid is on the job) and its provider child.
    let terraform = app.get(&format!("/jobs/{id}")).await.body["pid"]
        .as_i64()
        .expect("the job's pid");
    let killed = Command::new("pkill")
        .args([
            "-KILL",
            "-P",
            &terraform.to_string(),
            "-f",
            "terraform-provider-null",
        ])
        .status()
        .unwrap();
    assert!(
        killed.success(),
        "the provider of job {id} was found and killed"
    );
    let job = app.wait_for_job(&id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["exit_code"], 1, "{job}");

    // No state lock is left behind: plan and apply again.
    let plan = app.post("/terraform/plan", json!({"output": true})).await;
    assert_eq!(plan.status, 200, "{:?}", plan.body);
    assert_eq!(app.post_empty("/terraform/apply").await.status, 200);
    assert_eq!(
        app.post("/terraform/destroy", json!({"confirm": "default"}))
            .await
            .status,
        200
    );
}
