//! The cluster's view from Patroni, read through the bastion in one `ssh`
//! and kept a moment per workspace: a view younger than [`FRESH`] is
//! answered as is, and callers arriving while a probe runs share it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::cluster::{App, Error};
use crate::tools::patroni::{self, ClusterView, InventoryHost};
use crate::workspace::Workspace;

/// How long a view is answered without asking again.
pub const FRESH: Duration = Duration::from_secs(1);
/// The whole probe, ssh included: `/cluster/primary` answers within 2 s.
pub const TIMEOUT: Duration = Duration::from_millis(1800);

/// The last view of each workspace.
#[derive(Default)]
pub struct Probes {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Probed>>>>>,
}

/// A probe's outcome and when it ended.
struct Probed {
    at: Instant,
    view: Result<Arc<ClusterView>, String>,
}

impl Probes {
    fn slot(&self, workspace: &str) -> Arc<tokio::sync::Mutex<Option<Probed>>> {
        self.slots
            .lock()
            .unwrap()
            .entry(workspace.to_string())
            .or_default()
            .clone()
    }
}

/// The workspace's database hosts from its inventory; no inventory is a
/// conflict (configure first), as for `/cluster`.
pub fn inventory(workspace: &Workspace) -> Result<Vec<InventoryHost>, Error> {
    let text =
        std::fs::read_to_string(workspace.ansible_dir().join("hosts.ini")).map_err(|_| {
            Error::Conflict(
                "there is no inventory yet: call /ansible/configure (or /deploy) first".into(),
            )
        })?;
    let hosts = patroni::inventory_hosts(&text);
    if hosts.is_empty() {
        return Err(Error::Conflict(
            "the inventory has no database hosts: call /ansible/configure again".into(),
        ));
    }
    Ok(hosts)
}

/// The cluster as Patroni sees it now (at most [`FRESH`] old). A probe that
/// failed is [`Error::ClusterUnavailable`] naming why.
pub async fn cluster_view(app: &App, workspace: &Workspace) -> Result<Arc<ClusterView>, Error> {
    let hosts = inventory(workspace)?;
    let slot = app.probes.slot(workspace.name());
    let mut last = slot.lock().await;
    let fresh = last.as_ref().filter(|p| p.at.elapsed() < FRESH);
    let view = match fresh {
        Some(probed) => probed.view.clone(),
        None => {
            let view = probe(app, workspace, &hosts).await.map(Arc::new);
            *last = Some(Probed {
                at: Instant::now(),
                view: view.clone(),
            });
            view
        }
    };
    view.map_err(|why| Error::ClusterUnavailable(format!("the cluster could not be probed: {why}")))
}

/// One run of the probe script on the bastion.
async fn probe(
    app: &App,
    workspace: &Workspace,
    hosts: &[InventoryHost],
) -> Result<ClusterView, String> {
    let ssh_config = workspace.ansible_dir().join("ssh_config");
    // `configure` writes a shared connection into ssh_config when it can;
    // otherwise the probe asks for one itself.
    let shared = std::fs::read_to_string(&ssh_config)
        .map(|text| text.contains("ControlMaster auto"))
        .unwrap_or(false);
    let control_path = if shared {
        None
    } else {
        crate::cluster::configure::control_path()
    };
    let mut command = tokio::process::Command::new(&app.config.ssh_binary);
    command
        .args(patroni::probe_args(&ssh_config, control_path, hosts))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Only ssh itself is killed on a timeout: its one child is the
        // shared connection (ControlPersist), which ansible uses too.
        .kill_on_drop(true);
    for key in crate::config::SECRET_ENV {
        command.env_remove(key);
    }
    let run = async {
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", app.config.ssh_binary.display()))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feed = async move {
            // A remote end that does not read its input fails below.
            let _ = stdin.write_all(patroni::PROBE_SCRIPT.as_bytes()).await;
        };
        let (_, output) = tokio::join!(feed, child.wait_with_output());
        output.map_err(|e| format!("ssh: {e}"))
    };
    let output = tokio::time::timeout(TIMEOUT, run).await.map_err(|_| {
        format!(
            "no answer through the bastion within {:.1} s",
            TIMEOUT.as_secs_f64()
        )
    })??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last_line = stderr.lines().rev().find(|l| !l.trim().is_empty());
    match output.status.code() {
        Some(0) => patroni::parse_probe(&String::from_utf8_lossy(&output.stdout), hosts),
        // ssh's own failures (connection, authentication) exit 255.
        Some(255) => Err(format!(
            "the bastion could not be reached: {}",
            last_line.unwrap_or("ssh exited with 255")
        )),
        code => Err(format!(
            "the probe failed on the bastion ({}): {}",
            code.map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| "killed".into()),
            last_line.unwrap_or("no message")
        )),
    }
}
