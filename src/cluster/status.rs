//! The cluster's state read from the cluster itself: Patroni's view of its
//! members and PostgreSQL's own views on every host, through the bastion, by
//! the read-only playbook `status.yml`; each replica joined with the
//! leader's row for it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::backup::{Archiving, BackupInfo, Catalog};
use super::error::files_error;
use super::{Actor, App, Error};
use crate::domain::PostgresqlVersion;
use crate::store::{JobFilter, JobKind, JobStatus};
use crate::tools::ansible::status_job;
use crate::workspace::Workspace;

/// The cluster's state as the answer shows it. The handler builds it from
/// the hosts' reports; a unit test holds the two alike.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterStatus {
    /// No problem found: Patroni has a leader, every host is a running
    /// member on its timeline, the leader is not in recovery, and every
    /// replica answers, is in recovery and streams from it.
    pub healthy: bool,
    /// What is wrong, one line per problem (`replica2: unreachable`).
    pub problems: Vec<String>,
    /// The member Patroni says leads (null: none).
    pub leader: Option<String>,
    /// The leader's timeline (null: no leader).
    pub timeline: Option<u64>,
    /// Every Patroni member, as Patroni sees it (empty: Patroni did not answer).
    pub members: Vec<Member>,
    /// The host running as primary: the leader, or terraform's primary when
    /// there is none.
    pub primary: HostStatus,
    pub replicas: Vec<HostStatus>,
    /// Standbys streaming from the primary that are not in the inventory.
    #[schema(value_type = Vec<Object>)]
    pub unknown_standbys: Vec<Value>,
    /// WAL archiving on the leader (null: backups not configured).
    pub archiving: Option<Archiving>,
    /// The newest backup in the repository (null: none, or not configured).
    pub last_backup: Option<BackupInfo>,
    pub workspace: String,
    /// The read-only `ansible.status` job that read the state.
    pub job_id: crate::store::JobId,
    pub postgresql_version: u8,
}

/// One host as PostgreSQL on it and on the primary see it. Replica-only
/// fields are absent for the primary; fields a host could not report are
/// null.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostStatus {
    /// The inventory name (primary1, replica1, ...).
    pub name: String,
    pub address: Option<String>,
    /// Whether the host answered (false: unreachable over ssh).
    pub reachable: bool,
    /// psql's error when PostgreSQL did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    #[serde(default)]
    pub in_recovery: Option<bool>,
    #[serde(default)]
    pub server_version: Option<String>,
    /// Primary: its current WAL position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wal_lsn: Option<String>,
    /// Replica: `pg_stat_replication.state` on the primary (streaming,
    /// catchup, ...), null when it is not connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_lsn: Option<String>,
    /// Replica: the primary's WAL position minus what the replica replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_lag_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_lag_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lag_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<String>,
    /// Replica: received but not yet replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_backlog_bytes: Option<f64>,
    /// Replica: commit time of the last replayed transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replayed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_receiver_status: Option<String>,
    /// Replica: its replication slot on the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotStatus>,
}

/// A Patroni member.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The inventory name (primary1, replica1, ...).
    pub name: String,
    pub address: Option<String>,
    /// `leader`, `replica` or `sync_standby`.
    pub role: String,
    /// Patroni's state: `running`, `streaming`, `starting`, `stopped`, ...
    pub state: String,
    pub timeline: Option<u64>,
    /// Bytes behind the leader (null: the leader, or unknown).
    pub lag_bytes: Option<u64>,
    /// A changed setting waits for a restart of this member.
    pub pending_restart: bool,
}

/// A replication slot on the primary.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotStatus {
    pub slot_name: String,
    pub active: bool,
    /// WAL the slot keeps on the primary.
    pub retained_bytes: Option<f64>,
}

/// Reads the cluster's state (a job of kind `ansible.status`, no vault, no
/// lock) with the tools of `version`, by default the version of the
/// workspace's last successful run.
pub async fn cluster_status(
    app: &App,
    workspace: &Workspace,
    version: Option<PostgresqlVersion>,
    actor: &Actor,
) -> Result<Map<String, Value>, Error> {
    let read = read_report(app, workspace, version, actor).await?;
    let mut report = ClusterReport::from_report(&read.report);
    let catalog = Catalog::from_report(&read.report);
    if let Some(catalog) = &catalog {
        catalog.record_metrics(workspace.name());
        report.problems.extend(catalog.problem());
    }
    let mut body = report.into_json();
    body.insert(
        "archiving".into(),
        json!(catalog.as_ref().map(|c| &c.archiving)),
    );
    body.insert(
        "last_backup".into(),
        json!(catalog.as_ref().and_then(Catalog::last)),
    );
    body.insert("workspace".into(), json!(workspace.name()));
    body.insert("job_id".into(), json!(read.job_id));
    body.insert("postgresql_version".into(), json!(read.version.get()));
    Ok(body)
}

/// What `status.yml` wrote, and the job that wrote it.
pub(crate) struct Report {
    pub report: Value,
    pub job_id: crate::store::JobId,
    pub version: PostgresqlVersion,
}

/// Runs `status.yml` and reads its report.
pub(crate) async fn read_report(
    app: &App,
    workspace: &Workspace,
    version: Option<PostgresqlVersion>,
    actor: &Actor,
) -> Result<Report, Error> {
    let version = match version {
        Some(version) => version,
        None => last_run_version(app, workspace).await?,
    };
    if !workspace.ansible_dir().join("hosts.ini").is_file() {
        return Err(Error::Conflict(
            "there is no inventory yet: call /ansible/configure (or /deploy) first".into(),
        ));
    }
    let report_file = workspace
        .ansible_dir()
        .join("tmp")
        .join(format!("status-{}.json", uuid::Uuid::new_v4()));
    crate::workspace::make_dir(&workspace.ansible_dir().join("tmp"))
        .map_err(files_error(workspace))?;
    let mut spec = status_job(
        &app.config,
        workspace,
        version,
        &report_file,
        json!({ "postgresql_version": version.get() }),
    );
    actor.stamp(&mut spec);
    let output = app.submit(spec).await?.wait().await;
    let report = std::fs::read(&report_file);
    let _ = std::fs::remove_file(&report_file);
    if output.status != JobStatus::Succeeded {
        return Err(Error::tool_failed(
            "Reading the cluster's state failed",
            &output,
        ));
    }
    let report: Value = report
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            Error::internal(format!(
                "status job {} wrote no readable report",
                output.job_id
            ))
        })?;
    Ok(Report {
        report,
        job_id: output.job_id,
        version,
    })
}

/// The version the workspace's last successful `ansible/run` (or deploy)
/// installed.
pub(crate) async fn last_run_version(
    app: &App,
    workspace: &Workspace,
) -> Result<PostgresqlVersion, Error> {
    let filter = JobFilter {
        workspace: Some(workspace.name().to_string()),
        kind: Some(JobKind::AnsibleRun),
        status: Some(JobStatus::Succeeded),
        limit: 1,
        ..JobFilter::default()
    };
    let page = app
        .runner
        .store()
        .list(&filter)
        .await
        .map_err(Error::internal)?;
    Ok(page
        .jobs
        .first()
        .and_then(|job| job.request.get("postgresql_version"))
        .and_then(|v| PostgresqlVersion::parse(v).ok())
        .unwrap_or(PostgresqlVersion::DEFAULT))
}

/// The cluster as the answer shows it: each host with what it reported, and
/// each replica joined with the primary's row for it.
struct ClusterReport {
    leader: Option<String>,
    timeline: Option<u64>,
    members: Vec<Value>,
    primary: Value,
    replicas: Vec<Value>,
    /// Standbys the primary streams to that are not in the inventory.
    unknown_standbys: Vec<Value>,
    problems: Vec<String>,
}

impl ClusterReport {
    fn from_report(report: &Value) -> ClusterReport {
        let address = |name: &str| {
            report["addresses"]
                .get(name)
                .cloned()
                .unwrap_or(Value::Null)
        };
        let mut problems = Vec::new();
        let leader = report["leader"].as_str().map(String::from);
        let (members, timeline) = members(report, &mut problems);
        if leader.is_none() && !members.is_empty() {
            problems.push("no leader: Patroni has no member holding the leader lock".into());
        }

        let (primary_name, primary_report) = report["primary"]
            .as_object()
            .and_then(|m| m.iter().next())
            .map(|(name, r)| (name.clone(), r.clone()))
            .unwrap_or_default();
        let mut primary = host(&primary_name, address(&primary_name), &primary_report);
        primary.remove("standbys");
        primary.remove("slots");
        match host_problem(&primary_report) {
            Some(problem) => problems.push(format!("{primary_name}: {problem}")),
            None if primary_report["in_recovery"] == true => {
                problems.push(format!("{primary_name}: is in recovery, not a primary"));
            }
            None => {}
        }
        let standbys: Vec<Value> = primary_report["standbys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let slots: Vec<Value> = primary_report["slots"]
            .as_array()
            .cloned()
            .unwrap_or_default();

        let mut replicas = Vec::new();
        let inventory: Vec<(String, Value)> = report["replicas"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (name, own) in &inventory {
            let mut replica = host(name, address(name), own);
            let row = standbys
                .iter()
                .find(|s| s["application_name"] == name.as_str());
            let state = row.map(|r| r["state"].clone()).unwrap_or(Value::Null);
            replica.insert("state".into(), state.clone());
            for key in [
                "sync_state",
                "client_addr",
                "sent_lsn",
                "lag_bytes",
                "write_lag_seconds",
                "flush_lag_seconds",
                "replay_lag_seconds",
            ] {
                replica.insert(
                    key.into(),
                    row.map(|r| r[key].clone()).unwrap_or(Value::Null),
                );
            }
            let slot_name = own["wal_receiver"]["slot_name"].as_str();
            let slot = slots
                .iter()
                .find(|s| slot_name.is_some_and(|n| s["slot_name"] == n))
                .cloned()
                .unwrap_or(Value::Null);
            replica.insert("slot".into(), slot);
            match host_problem(own) {
                Some(problem) => problems.push(format!("{name}: {problem}")),
                None if own["in_recovery"] != true => {
                    problems.push(format!("{name}: is not in recovery (not a replica)"));
                }
                None if state != "streaming" => problems.push(format!(
                    "{name}: not streaming from the primary (state: {})",
                    state.as_str().unwrap_or("not connected")
                )),
                None => {}
            }
            replicas.push(Value::Object(replica));
        }
        let unknown_standbys = standbys
            .iter()
            .filter(|s| {
                !inventory
                    .iter()
                    .any(|(name, _)| s["application_name"] == name.as_str())
            })
            .cloned()
            .collect();
        ClusterReport {
            leader,
            timeline,
            members,
            primary: Value::Object(primary),
            replicas,
            unknown_standbys,
            problems,
        }
    }

    fn into_json(self) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("healthy".into(), json!(self.problems.is_empty()));
        body.insert("problems".into(), json!(self.problems));
        body.insert("leader".into(), json!(self.leader));
        body.insert("timeline".into(), json!(self.timeline));
        body.insert("members".into(), json!(self.members));
        body.insert("primary".into(), self.primary);
        body.insert("replicas".into(), json!(self.replicas));
        body.insert("unknown_standbys".into(), json!(self.unknown_standbys));
        body
    }
}

/// Patroni's members (its `/cluster` answer) in the answer's shape, and the
/// leader's timeline; a problem for each inventory host that is not a
/// running member on that timeline.
fn members(report: &Value, problems: &mut Vec<String>) -> (Vec<Value>, Option<u64>) {
    let Some(listed) = report["patroni"].as_array() else {
        problems.push("Patroni did not answer on any database host".into());
        return (Vec::new(), None);
    };
    let timeline = listed
        .iter()
        .find(|m| m["role"] == "leader")
        .and_then(|m| m["timeline"].as_u64());
    let members: Vec<Value> = listed
        .iter()
        .map(|m| {
            json!({
                "name": m["name"],
                "address": m["host"],
                "role": m["role"],
                "state": m["state"],
                "timeline": m["timeline"].as_u64(),
                "lag_bytes": m["lag"].as_u64(),
                "pending_restart": m["pending_restart"].as_bool().unwrap_or(false),
            })
        })
        .collect();
    let hosts: Vec<&String> = report["addresses"]
        .as_object()
        .map(|a| a.keys().collect())
        .unwrap_or_default();
    for name in hosts {
        match members.iter().find(|m| m["name"] == name.as_str()) {
            None => problems.push(format!("{name}: not a Patroni member")),
            Some(m) if !matches!(m["state"].as_str(), Some("running" | "streaming")) => {
                problems.push(format!(
                    "{name}: Patroni state {}",
                    m["state"].as_str().unwrap_or("unknown")
                ));
            }
            Some(m) if timeline.is_some() && m["timeline"].as_u64() != timeline => {
                problems.push(format!(
                    "{name}: on timeline {}, the leader on {}",
                    m["timeline"],
                    timeline.unwrap_or_default()
                ));
            }
            Some(m) if m["role"] != "leader" && m["lag_bytes"].is_null() => {
                problems.push(format!("{name}: lag unknown (not replicating)"));
            }
            Some(_) => {}
        }
    }
    (members, timeline)
}

/// A host's name, address, reachability and what it reported of itself.
fn host(name: &str, address: Value, own: &Value) -> Map<String, Value> {
    let mut host = Map::new();
    host.insert("name".into(), json!(name));
    host.insert("address".into(), address);
    host.insert("reachable".into(), json!(!own.is_null()));
    if let Value::Object(fields) = own {
        for (key, value) in fields {
            if key == "wal_receiver" {
                host.insert("wal_receiver_status".into(), value["status"].clone());
            } else {
                host.insert(key.clone(), value.clone());
            }
        }
    }
    host
}

fn host_problem(own: &Value) -> Option<String> {
    if own.is_null() {
        return Some("unreachable".into());
    }
    own.get("error")
        .map(|e| format!("PostgreSQL did not answer: {}", e.as_str().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        json!({
            "addresses": {"primary1": "10.0.1.10", "replica1": "10.0.2.11", "replica2": "10.0.2.12"},
            "leader": "primary1",
            "patroni": [
                {"name": "primary1", "role": "leader", "state": "running", "host": "10.0.1.10",
                 "port": 5432, "timeline": 1},
                {"name": "replica1", "role": "replica", "state": "running", "host": "10.0.2.11",
                 "port": 5432, "timeline": 1, "lag": 0},
                {"name": "replica2", "role": "replica", "state": "running", "host": "10.0.2.12",
                 "port": 5432, "timeline": 1, "lag": 0, "pending_restart": true}
            ],
            "primary": {"primary1": {
                "in_recovery": false, "server_version": "15.8", "current_wal_lsn": "0/3000148",
                "standbys": [
                    {"application_name": "replica1", "state": "streaming", "sync_state": "async",
                     "lag_bytes": 0, "replay_lag_seconds": 0.001},
                    {"application_name": "old9", "state": "streaming"}
                ],
                "slots": [{"slot_name": "pgc_replica1", "active": true, "retained_bytes": 0}]
            }},
            "replicas": {
                "replica1": {"in_recovery": true, "replay_lsn": "0/3000148",
                             "wal_receiver": {"status": "streaming", "slot_name": "pgc_replica1"}},
                "replica2": null
            }
        })
    }

    #[test]
    fn a_replica_is_joined_with_the_primarys_row_and_its_slot() {
        let body = ClusterReport::from_report(&report()).into_json();
        let replica = &body["replicas"][0];
        assert_eq!(replica["name"], "replica1");
        assert_eq!(replica["address"], "10.0.2.11");
        assert_eq!(replica["state"], "streaming");
        assert_eq!(replica["lag_bytes"], 0);
        assert_eq!(replica["slot"]["slot_name"], "pgc_replica1");
        assert_eq!(replica["wal_receiver_status"], "streaming");
        assert_eq!(body["primary"]["address"], "10.0.1.10");
        assert!(body["primary"].get("standbys").is_none());
    }

    #[test]
    fn an_unreachable_replica_makes_the_cluster_unhealthy() {
        let body = ClusterReport::from_report(&report()).into_json();
        assert_eq!(body["healthy"], false);
        assert_eq!(body["replicas"][1]["reachable"], false);
        assert_eq!(body["problems"], json!(["replica2: unreachable"]));
        assert_eq!(body["unknown_standbys"][0]["application_name"], "old9");
    }

    #[test]
    fn the_answer_matches_its_documented_shape() {
        let mut body = ClusterReport::from_report(&report()).into_json();
        body.insert("workspace".into(), json!("default"));
        body.insert("job_id".into(), json!(crate::store::JobId::new()));
        body.insert("postgresql_version".into(), json!(15));
        let catalog = Catalog::from_report(&crate::cluster::backup::tests_report()).unwrap();
        body.insert("archiving".into(), json!(catalog.archiving));
        body.insert("last_backup".into(), json!(catalog.last()));
        let typed: ClusterStatus = serde_json::from_value(Value::Object(body.clone()))
            .expect("the answer deserializes into ClusterStatus");
        assert_eq!(
            serde_json::to_value(&typed).unwrap()["replicas"][0]["state"],
            "streaming"
        );
    }

    #[test]
    fn patronis_members_and_leader_are_shown() {
        let body = ClusterReport::from_report(&report()).into_json();
        assert_eq!(body["leader"], "primary1");
        assert_eq!(body["timeline"], 1);
        let members = body["members"].as_array().unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0]["role"], "leader");
        assert_eq!(members[0]["lag_bytes"], Value::Null);
        assert_eq!(members[1]["lag_bytes"], 0);
        assert_eq!(members[2]["pending_restart"], true);
        assert_eq!(members[1]["address"], "10.0.2.11");
    }

    #[test]
    fn no_leader_or_a_member_behind_is_a_problem() {
        let mut r = report();
        r["leader"] = Value::Null;
        r["patroni"][0]["role"] = json!("replica");
        r["patroni"][0]["state"] = json!("stopped");
        r["patroni"][1]["lag"] = json!("unknown");
        r["patroni"].as_array_mut().unwrap().pop();
        let body = ClusterReport::from_report(&r).into_json();
        let problems: Vec<&str> = body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(problems.contains(&"no leader: Patroni has no member holding the leader lock"));
        assert!(problems.contains(&"primary1: Patroni state stopped"));
        assert!(problems.contains(&"replica1: lag unknown (not replicating)"));
        assert!(problems.contains(&"replica2: not a Patroni member"));
        assert_eq!(body["timeline"], Value::Null);
    }

    #[test]
    fn without_patroni_the_cluster_is_unhealthy() {
        let mut r = report();
        r["patroni"] = Value::Null;
        r["leader"] = Value::Null;
        let body = ClusterReport::from_report(&r).into_json();
        assert_eq!(body["healthy"], false);
        assert!(
            body["problems"]
                .to_string()
                .contains("Patroni did not answer")
        );
        assert_eq!(body["members"], json!([]));
    }

    #[test]
    fn a_replica_out_of_recovery_is_a_problem() {
        let mut r = report();
        r["replicas"]["replica2"] = json!({"in_recovery": false});
        let body = ClusterReport::from_report(&r).into_json();
        let problems = body["problems"].as_array().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p == "replica2: is not in recovery (not a replica)")
        );
    }
}
