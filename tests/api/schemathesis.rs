//! Schemathesis fuzzes the server from its own `/openapi.json`: no answer may
//! be a server error or fall outside the document (status, content type,
//! body schema, headers). The server drives the fake tools; real terraform
//! never runs here. openapi-spec-validator checks the document against the
//! official OpenAPI 3.1 schema. The test command installs both into
//! `.tools/schemathesis` (scripts/tools.sh); these tests fail rather than skip
//! when they are missing.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::helpers::*;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

/// Test cases per operation; `SCHEMATHESIS_MAX_EXAMPLES` changes it. About
/// 40 seconds on two cores.
const MAX_EXAMPLES: u32 = 100;

/// The same cases every run, so a failure reproduces; `SCHEMATHESIS_SEED`
/// explores others.
const SEED: u64 = 20261203;

/// A tool of `.tools/schemathesis`, or the one the environment names.
fn tool(variable: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/schemathesis/bin").join(name));
    assert!(
        path.is_file(),
        "{name} not found at {}: install it with `. scripts/tools.sh` (or set {variable})",
        path.display()
    );
    path
}

fn env_or<T: std::str::FromStr>(variable: &str, default: T) -> T {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(command: &mut Command, limit: Duration) -> (Output, String) {
    let output = tokio::time::timeout(limit, command.kill_on_drop(true).output())
        .await
        .expect("the tool finished in time")
        .expect("the tool started");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, report)
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let schemathesis = tool("SCHEMATHESIS_BINARY", "schemathesis");
    let token = "pgc_fuzzing-admin";
    let app = spawn_app_with(AppOptions {
        vars: vec![(
            "API_TOKENS",
            format!(
                "fuzz:admin:sha256:{}",
                pgcluster_api::tokens::TokenHash::of(token).to_hex()
            ),
        )],
        ..AppOptions::default()
    })
    .await;
    let document = app.get("/openapi.json").await.body;
    // Schemathesis counts `/docs` and `/docs/` as one path.
    let operations = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let path = path.strip_suffix('/').unwrap_or(path).to_string();
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len();

    let examples: u32 = env_or("SCHEMATHESIS_MAX_EXAMPLES", MAX_EXAMPLES);
    let seed: u64 = env_or("SCHEMATHESIS_SEED", SEED);
    // Its example database and replay files go to a scratch directory, not
    // the repository.
    let scratch = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (output, report) = run(
        Command::new(&schemathesis)
            .current_dir(scratch.path())
            .arg("run")
            .arg(format!("{}/openapi.json", app.address))
            .args(["--checks", CHECKS])
            .args(["--max-examples", &examples.to_string()])
            .args(["--seed", &seed.to_string()])
            .args(["--workers", "2"])
            .args(["--generation-database", "none"])
            .args(["--request-timeout", "60"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .arg("--no-color"),
        Duration::from_secs(900),
    )
    .await;
    eprintln!(
        "schemathesis: {examples} examples per operation, seed {seed}, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "schemathesis found answers the document does not allow (seed {seed}):\n{report}"
    );
    // It tested every operation and reached the handlers: jobs ran.
    assert!(
        report.contains(&format!("{operations} selected / {operations} total")),
        "not every operation was selected:\n{report}"
    );
    let jobs = app.get_as(token, "/jobs?limit=1").await;
    assert_eq!(jobs.status, 200);
    assert!(
        !jobs.body["jobs"].as_array().unwrap().is_empty(),
        "the fuzzing started no job:\n{report}"
    );
}

#[tokio::test]
async fn the_document_passes_openapi_spec_validator() {
    let validator = tool("OPENAPI_SPEC_VALIDATOR_BINARY", "openapi-spec-validator");
    let app = spawn_app().await;
    let document = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = app.root.path().join("openapi.json");
    std::fs::write(&file, document).unwrap();
    let (output, report) = run(
        Command::new(&validator).arg(&file),
        Duration::from_secs(120),
    )
    .await;
    assert!(output.status.success(), "{report}");
    assert!(report.contains("OK"), "{report}");
}
