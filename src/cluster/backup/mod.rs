//! Backups and point-in-time recovery with pgBackRest: a backup taken on
//! the leader (`backup.yml`), the repository's catalogue and the recovery
//! window read by the status playbook, the whole cluster restored to a point
//! of its history (`restore.yml`), and the schedules the server runs.

mod catalog;
mod restore;
mod schedule;
mod scheduler;

pub use catalog::{Archiving, BackupInfo, Backups, RecoveryWindow, backups};
pub use restore::{RestoreRequest, Restored, Target, restore};
pub use schedule::{
    LastRun, NextRuns, ScheduleRequest, ScheduleView, delete_schedule, save_schedule, schedule_of,
};
pub use scheduler::{SCHEDULER, run_due, run_schedules};

pub(crate) use catalog::Catalog;
#[cfg(test)]
pub(crate) use catalog::tests::report as tests_report;
pub(crate) use schedule::forget_schedule;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::error::files_error;
use super::status::last_run_version;
use super::{Actor, App, Error};
use crate::runner::{JobHandle, JobSpec};
use crate::store::JobKind;
use crate::tools::ansible::operation_job;
use crate::workspace::Workspace;

/// pgBackRest's backup types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Everything.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any type.
    #[default]
    Incr,
}

impl BackupType {
    pub const ALL: [BackupType; 3] = [BackupType::Full, BackupType::Diff, BackupType::Incr];

    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }

    pub fn parse(text: &str) -> Option<BackupType> {
        BackupType::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// The body of `POST /backups`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "full"}))]
pub struct BackupRequest {
    /// `full`, `diff` or `incr` (the default); pgBackRest takes a full
    /// backup when the repository has none to build on.
    #[serde(default, rename = "type")]
    #[schema(value_type = Option<BackupType>)]
    pub kind: Option<Value>,
    /// Answer `202` at once with the job instead of waiting for its end.
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

impl BackupRequest {
    pub fn backup_type(&self) -> Result<BackupType, Error> {
        match &self.kind {
            None | Some(Value::Null) => Ok(BackupType::default()),
            Some(Value::String(text)) => BackupType::parse(text)
                .ok_or_else(|| Error::field("type", "must be one of full, diff, incr")),
            Some(_) => Err(Error::field("type", "must be one of full, diff, incr")),
        }
    }
}

/// A backup just taken: its job's result.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Backup {
    /// pgBackRest's label, what a restore names (`{"backup": label}`).
    pub label: String,
    /// The type taken: an `incr` or `diff` without a full to build on is a
    /// `full`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The member it was taken on (the leader).
    pub leader: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub stopped_at: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub database_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub repository_bytes: Option<u64>,
}

/// A count a playbook wrote as a number or as its text.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Refuses a backup or restore before the workspace's stack gave it a
/// repository (`backup_repository`, written by configure).
fn check_configured(workspace: &Workspace) -> Result<(), Error> {
    let vars = workspace.ansible_dir().join("postgresql.yml");
    let text = std::fs::read_to_string(&vars).map_err(|_| {
        Error::Conflict(
            "there is no inventory yet: call /ansible/configure (or /deploy) first".into(),
        )
    })?;
    if text
        .lines()
        .any(|l| l.starts_with("pgbackrest_repository:"))
    {
        Ok(())
    } else {
        Err(Error::Conflict(
            "backups are not configured: the stack outputs no backup_repository (apply a stack \
             that does, then /ansible/configure and /ansible/run)"
                .into(),
        ))
    }
}

/// Starts a backup of `kind` on the leader.
pub async fn start_backup(
    app: &App,
    workspace: &Workspace,
    kind: BackupType,
    run_async: bool,
    actor: &Actor,
) -> Result<JobHandle, Error> {
    check_configured(workspace)?;
    let request = json!({"type": kind.as_str(), "async": run_async});
    let mut vars = json!({"pgbackrest_backup_type": kind.as_str()});
    // The leader as Patroni says now, or the playbook asks every member.
    if let Ok(leader) = super::ha::primary(app, workspace).await {
        vars["pgcluster_leader"] = json!(leader.name);
    }
    let mut spec = cluster_job(app, workspace, JobKind::ClusterBackup, vars, request).await?;
    actor.stamp(&mut spec);
    let name = workspace.name().to_string();
    let started = std::time::Instant::now();
    let read = spec.on_success.take();
    spec.on_success = Some(Box::new(move |output| {
        let result = read.map(|hook| hook(output)).transpose()?.flatten();
        if let Some(backup) = result
            .clone()
            .and_then(|r| serde_json::from_value::<Backup>(r).ok())
        {
            if let Ok(at) = OffsetDateTime::parse(&backup.stopped_at, &Rfc3339) {
                crate::metrics::backup_succeeded(&name, &backup.kind, at.unix_timestamp() as f64);
            }
            crate::metrics::backup_duration(&name, &backup.kind, started.elapsed().as_secs_f64());
        }
        Ok(result)
    }));
    app.submit(spec).await
}

/// The job running `playbook` of `kind` with `vars` and the vault; its
/// result is the JSON the playbook writes to `pgcluster_result_file`.
async fn cluster_job(
    app: &App,
    workspace: &Workspace,
    kind: JobKind,
    vars: Value,
    request: Value,
) -> Result<JobSpec, Error> {
    let version = last_run_version(app, workspace).await?;
    let playbook = super::playbook::playbook_spec(app, workspace, version, Value::Null).await?;
    let (_, password) = playbook
        .secret_input
        .ok_or_else(|| Error::internal("the playbook job has no vault password"))?;
    let tmp = workspace.ansible_dir().join("tmp");
    crate::workspace::make_dir(&tmp).map_err(files_error(workspace))?;
    let result_file = tmp.join(format!("{}-{}.json", kind.as_str(), uuid::Uuid::new_v4()));
    let mut vars = vars;
    vars["pgcluster_result_file"] = json!(result_file);
    vars["postgresql_version"] = json!(version.get());
    let file_name = match kind {
        JobKind::ClusterRestore => "restore.yml",
        _ => "backup.yml",
    };
    let mut spec = operation_job(
        &app.config,
        workspace,
        password,
        kind,
        file_name,
        &vars,
        request,
    );
    let read_from = result_file.clone();
    spec.on_success = Some(Box::new(move |_| {
        let bytes = std::fs::read(&read_from)
            .map_err(|e| format!("{file_name} wrote no result ({}): {e}", read_from.display()))?;
        serde_json::from_slice::<Value>(&bytes)
            .map(Some)
            .map_err(|e| format!("{file_name} wrote an unreadable result: {e}"))
    }));
    spec.on_finish = Some(Box::new(move |_| {
        let _ = std::fs::remove_file(&result_file);
    }));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_defaults_to_incr_and_names_its_field() {
        let parse = |body: Value| {
            serde_json::from_value::<BackupRequest>(body)
                .unwrap()
                .backup_type()
        };
        assert_eq!(parse(json!({})).unwrap(), BackupType::Incr);
        assert_eq!(parse(json!({"type": "full"})).unwrap(), BackupType::Full);
        assert_eq!(parse(json!({"type": "diff"})).unwrap(), BackupType::Diff);
        for bad in [json!("weekly"), json!(1), json!("FULL")] {
            let Err(Error::Invalid { fields, .. }) = parse(json!({"type": bad})) else {
                panic!("{bad} refused");
            };
            assert!(fields.contains_key("type"));
        }
    }
}
