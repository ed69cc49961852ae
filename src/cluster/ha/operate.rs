//! Switchover, failover, restart and reinit: each request is checked
//! against the cluster's view first (nothing runs on a refusal), then runs
//! as a job of `operate.yml`, which calls Patroni's REST API from a database
//! host and writes its result as JSON for the job.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::plan::plan;
use super::probe::cluster_view;
use crate::cluster::error::files_error;
use crate::cluster::{Actor, App, Error};
use crate::domain::PostgresqlVersion;
use crate::runner::{JobHandle, RunOutput};
use crate::store::JobKind;
use crate::tools::ansible::operation_job;
use crate::tools::patroni::is_member_name;
use crate::workspace::Workspace;

/// Patroni's `maximum_lag_on_failover` as `ha.yml` sets it: a replica
/// further behind is no candidate.
pub const MAXIMUM_LAG_BYTES: u64 = 1024 * 1024;

/// The body of `POST /cluster/switchover`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"candidate": "replica1"}))]
pub struct SwitchoverRequest {
    /// The member to lead next; by default Patroni picks a healthy replica.
    #[serde(default)]
    pub candidate: Option<String>,
    /// When to switch over (RFC 3339, in the future); by default now.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub scheduled_at: Option<String>,
    /// Answer `202` at once with the job instead of waiting for its end.
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

/// The body of `POST /cluster/failover`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"candidate": "replica1", "confirm": "default"}))]
pub struct FailoverRequest {
    /// The member to promote.
    #[serde(default)]
    #[schema(required = true)]
    pub candidate: Option<String>,
    /// The workspace's name, to confirm a failover.
    #[serde(default)]
    #[schema(required = true)]
    pub confirm: Option<String>,
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

/// The body of `POST /cluster/restart`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"pending_only": true}))]
pub struct RestartRequest {
    /// One member; by default every member, replicas first one at a time,
    /// the leader last.
    #[serde(default)]
    pub member: Option<String>,
    /// Restart only members whose settings wait for a restart.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub pending_only: bool,
    /// Hand the leader's role to a healthy replica before restarting it,
    /// instead of restarting it in place.
    #[serde(default)]
    pub switchover_leader: bool,
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

impl Default for RestartRequest {
    fn default() -> Self {
        RestartRequest {
            member: None,
            pending_only: true,
            switchover_leader: false,
            run_async: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// The body of `POST /cluster/reinit`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"member": "replica2"}))]
pub struct ReinitRequest {
    /// The replica to rebuild from the leader.
    #[serde(default)]
    #[schema(required = true)]
    pub member: Option<String>,
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

/// A checked request.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    Switchover {
        candidate: Option<String>,
        scheduled_at: Option<OffsetDateTime>,
    },
    Failover {
        candidate: String,
    },
    Restart {
        member: Option<String>,
        pending_only: bool,
        switchover_leader: bool,
    },
    Reinit {
        member: String,
    },
}

impl Operation {
    pub fn switchover(
        request: &SwitchoverRequest,
        now: OffsetDateTime,
    ) -> Result<Operation, Error> {
        let candidate = name_of("candidate", request.candidate.as_deref())?;
        let scheduled_at = match request.scheduled_at.as_deref() {
            None => None,
            Some(raw) => {
                let at = OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
                    Error::field(
                        "scheduled_at",
                        "must be an RFC 3339 time with its offset, like 2026-12-07T05:00:00Z",
                    )
                })?;
                if at <= now {
                    return Err(Error::field("scheduled_at", "is in the past"));
                }
                Some(at)
            }
        };
        Ok(Operation::Switchover {
            candidate,
            scheduled_at,
        })
    }

    /// A failover must name its candidate and be confirmed with the
    /// workspace's name: it promotes a replica without the leader's consent.
    pub fn failover(request: &FailoverRequest, workspace: &str) -> Result<Operation, Error> {
        if request.confirm.as_deref() != Some(workspace) {
            return Err(Error::field(
                "confirm",
                format!("must be the workspace's name, '{workspace}', to confirm a failover"),
            ));
        }
        let candidate = name_of("candidate", request.candidate.as_deref())?
            .ok_or_else(|| Error::field("candidate", "is required"))?;
        Ok(Operation::Failover { candidate })
    }

    pub fn restart(request: &RestartRequest) -> Result<Operation, Error> {
        Ok(Operation::Restart {
            member: name_of("member", request.member.as_deref())?,
            pending_only: request.pending_only,
            switchover_leader: request.switchover_leader,
        })
    }

    pub fn reinit(request: &ReinitRequest) -> Result<Operation, Error> {
        let member = name_of("member", request.member.as_deref())?
            .ok_or_else(|| Error::field("member", "is required"))?;
        Ok(Operation::Reinit { member })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Operation::Switchover { .. } => "switchover",
            Operation::Failover { .. } => "failover",
            Operation::Restart { .. } => "restart",
            Operation::Reinit { .. } => "reinit",
        }
    }

    fn kind(&self) -> JobKind {
        match self {
            Operation::Switchover { .. } => JobKind::ClusterSwitchover,
            Operation::Failover { .. } => JobKind::ClusterFailover,
            Operation::Restart { .. } => JobKind::ClusterRestart,
            Operation::Reinit { .. } => JobKind::ClusterReinit,
        }
    }
}

fn name_of(field: &str, raw: Option<&str>) -> Result<Option<String>, Error> {
    match raw {
        None => Ok(None),
        Some(name) if is_member_name(name) => Ok(Some(name.to_string())),
        Some(_) => Err(Error::field(
            field,
            "is not a member name (letters, digits, '_', '-', '.')",
        )),
    }
}

/// The result of a switchover or a failover.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct LeaderChange {
    pub old_leader: Option<String>,
    /// Null while a scheduled switchover waits for its time.
    pub new_leader: Option<String>,
    /// The leader's timeline after the change.
    pub timeline: Option<u64>,
    /// Seconds during which no member answered Patroni's `/primary` with
    /// 200 (polled every 0.2 s from a database host): the last answer of the
    /// old leader to the first of the new one. For a failover, from the
    /// request (there was no writable leader before it).
    pub write_unavailable_seconds: Option<f64>,
    /// A scheduled switchover: when Patroni will do it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scheduled_at: Option<String>,
}

/// The result of a restart.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Restarted {
    /// The members restarted, in order (replicas first, the leader last).
    pub restarted: Vec<String>,
    /// The leader once done.
    pub leader: Option<String>,
}

/// The result of a reinit.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Reinitialized {
    pub member: String,
}

/// The operation's result, as its job recorded it.
pub fn result_of<T: DeserializeOwned + Default>(output: &RunOutput) -> T {
    output
        .result
        .clone()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// Checks the operation against the cluster, then starts its job.
pub async fn operate(
    app: &App,
    workspace: &Workspace,
    operation: Operation,
    run_async: bool,
    actor: &Actor,
) -> Result<JobHandle, Error> {
    let view = cluster_view(app, workspace).await?;
    let mut vars = plan(&operation, &view, workspace.name())?;
    // The playbook's own preconditions (vault password and file), and the
    // vault's values (the REST API's password) learned for masking.
    let playbook = crate::cluster::playbook::playbook_spec(
        app,
        workspace,
        PostgresqlVersion::DEFAULT,
        Value::Null,
    )
    .await?;
    let (_, password) = playbook
        .secret_input
        .ok_or_else(|| Error::internal("the playbook job has no vault password"))?;
    let tmp = workspace.ansible_dir().join("tmp");
    crate::workspace::make_dir(&tmp).map_err(files_error(workspace))?;
    let result_file = tmp.join(format!("operation-{}.json", uuid::Uuid::new_v4()));
    vars.insert("pgcluster_result_file".into(), json!(result_file));
    let mut record = request_record(&operation);
    record.insert("async".into(), json!(run_async));
    let mut spec = operation_job(
        &app.config,
        workspace,
        password,
        operation.kind(),
        "operate.yml",
        &Value::Object(vars),
        Value::Object(record),
    );
    actor.stamp(&mut spec);
    let kind = operation.kind();
    let read_from = result_file.clone();
    spec.on_success = Some(Box::new(move |_| read_result(kind, &read_from).map(Some)));
    spec.on_finish = Some(Box::new(move |_| {
        let _ = std::fs::remove_file(&result_file);
    }));
    app.submit(spec).await
}

/// What the job records of the request.
fn request_record(operation: &Operation) -> Map<String, Value> {
    let mut record = Map::new();
    record.insert("operation".into(), json!(operation.name()));
    match operation {
        Operation::Switchover {
            candidate,
            scheduled_at,
        } => {
            record.insert("candidate".into(), json!(candidate));
            record.insert(
                "scheduled_at".into(),
                json!(scheduled_at.and_then(|t| t.format(&Rfc3339).ok())),
            );
        }
        Operation::Failover { candidate } => {
            record.insert("candidate".into(), json!(candidate));
        }
        Operation::Restart {
            member,
            pending_only,
            switchover_leader,
        } => {
            record.insert("member".into(), json!(member));
            record.insert("pending_only".into(), json!(pending_only));
            record.insert("switchover_leader".into(), json!(switchover_leader));
        }
        Operation::Reinit { member } => {
            record.insert("member".into(), json!(member));
        }
    }
    record
}

/// The result file `operate.yml` wrote, in the shape of its operation.
pub(super) fn read_result(kind: JobKind, path: &std::path::Path) -> Result<Value, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("operate.yml wrote no result ({}): {e}", path.display()))?;
    let unreadable = |e: serde_json::Error| format!("operate.yml wrote an unreadable result: {e}");
    let value = match kind {
        JobKind::ClusterSwitchover | JobKind::ClusterFailover => serde_json::to_value(
            serde_json::from_slice::<LeaderChange>(&bytes).map_err(unreadable)?,
        ),
        JobKind::ClusterRestart => {
            serde_json::to_value(serde_json::from_slice::<Restarted>(&bytes).map_err(unreadable)?)
        }
        _ => serde_json::to_value(
            serde_json::from_slice::<Reinitialized>(&bytes).map_err(unreadable)?,
        ),
    };
    value.map_err(|e| e.to_string())
}
