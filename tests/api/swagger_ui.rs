//! `/docs` in a real browser: headless Chromium loads Swagger UI from the
//! server alone (no network besides it) and renders every documented route.
//! Chromium is Debian's `chromium` package: `scripts/test.sh` installs it as
//! root; without it, and not root, the test says why it skips.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::helpers::*;

/// `CHROMIUM`, or `chromium` / `chromium-browser` on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[tokio::test]
async fn swagger_ui_renders_every_documented_route_in_a_headless_browser() {
    let Some(chromium) = chromium() else {
        assert!(
            !is_root(),
            "chromium is not installed: scripts/test.sh installs it (apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED Swagger UI browser test: chromium is not installed and installing it \
             needs root (scripts/test.sh does it as root)"
        );
        return;
    };
    let app = spawn_app().await;
    let document = app.get("/openapi.json").await.body;
    let paths: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // The page as served is a shell: the routes are rendered by its scripts.
    let shell = app
        .client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!shell.contains("/terraform/plan"), "{shell}");

    let profile = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            // Without these Chromium waits for the network this machine may lack.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{}/docs", app.address))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("chromium finished in time")
        .expect("chromium started");
    let dom = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "chromium rendered /docs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Swagger UI ran: it fetched /openapi.json and rendered an operation per route.
    assert!(dom.contains("swagger-ui"), "{dom:.2000}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|path| !dom.contains(&format!("data-path=\"{path}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "Swagger UI did not render {missing:?}:\n{dom:.3000}"
    );
    for path in ["/terraform/plan", "/workspaces/{name}/terraform/apply"] {
        assert!(dom.contains(&format!("data-path=\"{path}\"")), "{path}");
    }
}
