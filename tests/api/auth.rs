//! Bearer tokens: 401 without a valid one, 403 below the route's scope, open
//! operational routes, the `token create` command and the start-up guard.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgcluster_api::tokens::{Scope, TokenEntry};
use serde_json::json;

use crate::helpers::*;

const READ: &str = "pgc_reader-token-for-tests-only";
const PLAN: &str = "pgc_planner-token-for-tests-only";
const APPLY: &str = "pgc_applier-token-for-tests-only";
const ADMIN: &str = "pgc_admin-token-for-tests-only";

fn api_tokens() -> String {
    [
        ("reader", Scope::Read, READ),
        ("planner", Scope::Plan, PLAN),
        ("applier", Scope::Apply, APPLY),
        ("admin", Scope::Admin, ADMIN),
    ]
    .map(|(name, scope, token)| TokenEntry::for_token(name, scope, token).config_entry())
    .join(",")
}

async fn spawn_app_with_tokens() -> TestApp {
    spawn_app_with(AppOptions {
        vars: vec![("API_TOKENS", api_tokens())],
        ..AppOptions::default()
    })
    .await
}

fn assert_unauthorized(answer: &Answer) {
    assert_eq!(answer.status, 401, "{:?}", answer.body);
    assert_eq!(answer.headers["www-authenticate"], "Bearer");
    assert!(answer.body["error"].is_string(), "{:?}", answer.body);
}

#[tokio::test]
async fn a_request_without_a_token_is_unauthorized() {
    let app = spawn_app_with_tokens().await;
    assert_unauthorized(&app.get("/jobs").await);
    assert_unauthorized(&app.post_empty("/terraform/init").await);
    assert!(app.calls().is_empty(), "a tool ran without a token");
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let app = spawn_app_with_tokens().await;
    let answer = app.get_as("pgc_not-a-configured-token", "/jobs").await;
    assert_unauthorized(&answer);
    // A configured token's hash is not a token.
    let entry = TokenEntry::for_token("x", Scope::Admin, ADMIN).config_entry();
    let hash = entry.rsplit(':').next().unwrap();
    assert_unauthorized(&app.get_as(hash, "/jobs").await);
}

#[tokio::test]
async fn another_scheme_than_bearer_is_unauthorized() {
    let app = spawn_app_with_tokens().await;
    let response = app
        .client
        .get(format!("{}/jobs", app.address))
        .basic_auth("admin", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// Every token against a route of every level: the route's own answer at or
/// above its scope, 403 naming the scope below it.
#[tokio::test]
async fn each_scope_reaches_the_routes_of_its_level_and_below() {
    let app = spawn_app_with_tokens().await;
    // (scope the route needs, method, path, status when allowed)
    let routes = [
        (Scope::Read, "GET", "/jobs", 200),
        // Reaches the handler: there is no inventory yet.
        (Scope::Read, "GET", "/cluster", 409),
        (Scope::Plan, "POST", "/terraform/init", 200),
        // Reaches the handler: there is no saved plan to apply.
        (Scope::Apply, "POST", "/terraform/apply", 409),
        // Reaches the handler: a deploy without its variables.
        (Scope::Apply, "POST", "/deploy", 400),
        (
            Scope::Apply,
            "POST",
            "/workspaces/default/deploy/resume",
            409,
        ),
        // Reaches the handler: destroy without its confirmation.
        (Scope::Admin, "POST", "/terraform/destroy", 400),
        // Not in the scope table: admin.
        (Scope::Admin, "GET", "/no/such/route", 404),
    ];
    for (scope, token) in [
        (Scope::Read, READ),
        (Scope::Plan, PLAN),
        (Scope::Apply, APPLY),
        (Scope::Admin, ADMIN),
    ] {
        for (needed, method, path, allowed_status) in routes {
            let answer = match method {
                "GET" => app.get_as(token, path).await,
                _ => app.post_as(token, path, json!({})).await,
            };
            let what = format!("{scope} token, {method} {path}: {:?}", answer.body);
            if scope >= needed {
                assert_eq!(answer.status, allowed_status, "{what}");
            } else {
                assert_eq!(answer.status, 403, "{what}");
                assert_eq!(answer.body["required_scope"], needed.as_str(), "{what}");
                let error = answer.body["error"].as_str().unwrap();
                assert!(error.contains(&format!("'{needed}'")), "{what}");
            }
        }
    }
}

#[tokio::test]
async fn a_forbidden_request_runs_nothing() {
    let app = spawn_app_with_tokens().await;
    let answer = app.post_as(PLAN, "/terraform/destroy", json!({})).await;
    assert_eq!(answer.status, 403);
    assert!(app.calls().is_empty(), "a tool ran for a forbidden request");
}

#[tokio::test]
async fn health_and_version_need_no_token() {
    let app = spawn_app_with_tokens().await;
    for path in ["/health", "/version"] {
        assert_eq!(app.get(path).await.status, 200, "{path}");
        assert_eq!(app.get_as("pgc_wrong", path).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn metrics_need_a_token_when_configured_so() {
    let app = spawn_app_with(AppOptions {
        vars: vec![
            ("API_TOKENS", api_tokens()),
            ("METRICS_REQUIRE_TOKEN", "true".into()),
        ],
        ..AppOptions::default()
    })
    .await;
    assert_unauthorized(&app.get("/metrics").await);
}

#[tokio::test]
async fn without_tokens_requests_need_no_authorization() {
    let app = spawn_app().await;
    assert_eq!(app.get("/jobs").await.status, 200);
    assert_eq!(app.post_empty("/terraform/init").await.status, 200);
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgcluster-api"));
    command
        .env_remove("API_TOKENS")
        .env_remove("ALLOW_UNAUTHENTICATED");
    command
}

#[tokio::test]
async fn the_entry_printed_by_token_create_admits_the_printed_token() {
    let output = binary()
        .args(["token", "create", "--name", "ci", "--scope", "apply"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {stdout}"))
            .to_string()
    };
    let token = line("token: ");
    let entry = line("API_TOKENS entry: ");
    assert!(token.starts_with("pgc_") && token.len() == 47, "{token}");
    assert!(entry.starts_with("ci:apply:sha256:"), "{entry}");
    assert!(!entry.contains(&token));

    let app = spawn_app_with(AppOptions {
        vars: vec![("API_TOKENS", entry)],
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.get_as(&token, "/jobs").await.status, 200);
    assert_eq!(
        app.post_as(&token, "/terraform/apply", json!({}))
            .await
            .status,
        409
    );
    assert_eq!(
        app.post_as(&token, "/terraform/destroy", json!({}))
            .await
            .status,
        403
    );
    assert_unauthorized(&app.get("/jobs").await);
}

#[test]
fn unknown_arguments_print_the_usage_and_exit_2() {
    let output = binary().arg("--port").arg("80").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("token create"), "{stderr}");
}

#[test]
fn a_non_loopback_address_without_tokens_refuses_to_start() {
    let root = tempfile::tempdir().unwrap();
    let mut child = binary()
        .current_dir(root.path())
        .envs(test_vars(root.path(), Tools::Fake))
        .env("HOST_ADDRESS", "0.0.0.0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on 0.0.0.0 without tokens");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ALLOW_UNAUTHENTICATED"), "{stderr}");
}

/// The binary with tokens configured: valid and invalid tokens are used, and
/// neither they nor the configured hashes reach the console or the logs.
#[tokio::test]
async fn tokens_and_their_hashes_stay_out_of_the_logs() {
    let root = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tokens = api_tokens();
    let child = binary()
        .current_dir(root.path())
        .envs(test_vars(root.path(), Tools::Fake))
        .env("API_PORT", port.to_string())
        .env("API_TOKENS", &tokens)
        .env("DEBUG", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "server did not start");
    let wrong = "pgc_wrong-token-that-must-not-be-logged";
    for token in [READ, wrong] {
        for path in ["/terraform/init", "/terraform/destroy"] {
            client
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        }
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let output = child.wait_with_output().unwrap();
    let console = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let app_log = crate::server_process::read_log(&root.path().join("logs"), "app.log");
    assert!(app_log.contains("invalid bearer token"), "{app_log}");
    assert!(app_log.contains("token lacks the scope"), "{app_log}");
    let hashes: Vec<&str> = tokens.split(',').map(|e| &e[e.len() - 64..]).collect();
    for (name, text) in [("console", &console), ("app.log", &app_log)] {
        for secret in [READ, wrong].iter().chain(&hashes) {
            assert!(!text.contains(secret), "{secret} in the {name}");
        }
    }
}
