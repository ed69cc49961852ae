//! Faults of the disks under the server: a `DATA_DIR` that fills up while a
//! job prints, and a full `LOG_DIR`. Each ends in a clear, bounded state and
//! recovers once there is room again. Real filesystems (a small tmpfs), so
//! these need root, like the lab.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::server_process::{ServerProcess, read_log};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A tmpfs of a given size, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs at {}", path.display());
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Gives the filesystem more room, as an operator freeing space would.
    fn grow(&self, size: &str) {
        let grown = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(grown.success());
    }

    fn free(&self) -> u64 {
        pgcluster_api::disk::Space::of(&self.path).unwrap().free
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn get(server: &ServerProcess, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = server
        .client
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Polls until `done` holds of the answer to `GET path`, for up to a minute.
async fn wait_for(
    server: &ServerProcess,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..600 {
        let (_, _, body) = get(server, path).await;
        if let Ok(value) = serde_json::from_str::<Value>(&body)
            && done(&value)
        {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Every stored line of a job's log, in order.
async fn log_lines(server: &ServerProcess, id: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut after = 0;
    loop {
        let page = server
            .get(&format!("/jobs/{id}/log?after={after}&limit=10000"))
            .await;
        let page = page["lines"].as_array().cloned().unwrap_or_default();
        let Some(last) = page.last() else {
            return lines;
        };
        after = last["n"].as_u64().unwrap();
        lines.extend(page);
    }
}

fn stop(mut server: ServerProcess) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    let _ = server.child.wait();
}

#[tokio::test]
async fn a_data_dir_that_fills_up_ends_the_job_with_its_tool_refuses_runs_and_recovers() {
    if !is_root() {
        eprintln!("skipped: a small filesystem for DATA_DIR needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = Tmpfs::mount(&root.path().join("data"), "4m");
    let data_dir = data.path.display().to_string();
    let settings = [("DATA_DIR", data_dir.as_str()), ("MIN_FREE_BYTES", "65536")];
    let server = ServerProcess::start(root.path(), &settings).await;

    // About 16 MB of output that does not compress, into 4 MB.
    std::fs::write(root.path().join("fake/random"), "12000000").unwrap();
    let (status, started) = server.post("/terraform/init", json!({"async": true})).await;
    assert_eq!(status, 202, "{started}");
    let id = started["job_id"].as_str().unwrap().to_string();
    let job = wait_for(&server, &format!("/jobs/{id}"), "the job ends", |job| {
        !matches!(job["status"].as_str(), Some("queued" | "running"))
    })
    .await;
    assert_eq!(job["status"], "succeeded", "the tool's own status: {job}");
    assert_eq!(job["exit_code"], 0);
    assert!(
        data.free() < 65536,
        "the disk filled up: {} free",
        data.free()
    );

    // The lock went with the tool; new work is refused, naming the space.
    let workspace = server.get("/workspaces/default").await;
    assert_eq!(workspace["busy_with"], Value::Null, "{workspace}");
    let refused = server
        .client
        .post(format!("{}/terraform/init", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 507);
    assert_eq!(refused.headers()["retry-after"], "30");
    let error: Value = refused.json().await.unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.starts_with("no space left on device under DATA_DIR")
            && message.contains(&data_dir),
        "{message}"
    );
    let (ready, _, body) = get(&server, "/ready").await;
    assert_eq!(ready, 503, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert!(
        ready["failing"]
            .as_array()
            .unwrap()
            .contains(&json!("data_dir"))
    );
    assert!(
        ready["checks"]["data_dir"]["detail"]
            .as_str()
            .unwrap()
            .contains("no space left on device"),
        "{ready}"
    );
    let (_, _, metrics) = get(&server, "/metrics").await;
    assert!(
        metrics.contains("pgcluster_disk_free_bytes{dir=\"data_dir\"}"),
        "{metrics}"
    );

    // Room again: readiness comes back, the held lines and the job's end are
    // stored, with a line saying what could not be.
    data.grow("64m");
    wait_for(&server, "/ready", "data_dir is ready again", |ready| {
        ready["checks"]["data_dir"]["ok"] == true
    })
    .await;
    let logs = root.path().join("logs");
    for _ in 0..300 {
        if read_log(&logs, "app.log").contains("recorded the end of the job") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_file(root.path().join("fake/random")).unwrap();
    let (status, body) = server.post("/terraform/init", json!({})).await;
    assert_eq!(status, 200, "{body}");
    stop(server);

    // A new server finds the job as it ended, and its log.
    let server = ServerProcess::start(root.path(), &settings).await;
    let job = server.get(&format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let lines = log_lines(&server, &id).await;
    let marker = lines
        .iter()
        .position(|line| {
            line["stream"] == "system"
                && line["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("could not be stored: no space left on device"))
        })
        .expect("a line says how many lines could not be stored");
    assert!(
        marker + 1 < lines.len(),
        "the newest lines were kept and stored"
    );
    let numbers: Vec<u64> = lines.iter().map(|l| l["n"].as_u64().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order");
    stop(server);
}

#[tokio::test]
async fn a_full_log_dir_drops_tool_log_lines_with_a_count_and_stops_nothing() {
    if !is_root() {
        eprintln!("skipped: a small filesystem for LOG_DIR needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let logs = Tmpfs::mount(&root.path().join("logs"), "1m");
    let log_dir = logs.path.display().to_string();
    let settings = [("LOG_DIR", log_dir.as_str()), ("MIN_FREE_BYTES", "65536")];
    let server = ServerProcess::start(root.path(), &settings).await;

    std::fs::write(root.path().join("fake/random"), "3000000").unwrap();
    let (status, body) = server.post("/terraform/init", json!({})).await;
    assert_eq!(
        status, 200,
        "the job is not stopped by its log file: {body}"
    );
    assert!(logs.free() < 65536, "the log disk filled up");
    let (ready, _, body) = get(&server, "/ready").await;
    assert_eq!(ready, 503, "{body}");
    assert!(body.contains("under LOG_DIR"), "{body}");
    let jobs = server.get("/jobs").await;
    assert_eq!(
        jobs["jobs"][0]["status"], "succeeded",
        "requests are served"
    );

    logs.grow("16m");
    std::fs::remove_file(root.path().join("fake/random")).unwrap();
    let (status, body) = server.post("/terraform/init", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let mut reported = String::new();
    for _ in 0..100 {
        reported = read_log(&logs.path, "terraform.log");
        if reported.contains("lines of tool output could not be written") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reported.contains("lines of tool output could not be written: No space left on device"),
        "the tool log says how many lines it lost: {}",
        &reported[reported.len().saturating_sub(2000)..]
    );
    stop(server);
}
