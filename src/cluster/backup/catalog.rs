//! The repository as the leader sees it: pgBackRest's catalogue (`pgbackrest
//! info --output=json`), PostgreSQL's archiver (`pg_stat_archiver`) and the
//! recovery window they give, read by `status.yml` with the rest of the
//! cluster's state.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::check_configured;
use crate::cluster::status::read_report;
use crate::cluster::{Actor, App, Error};
use crate::store::JobId;
use crate::workspace::Workspace;

/// One backup in the repository.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupInfo {
    /// pgBackRest's label: `{"backup": label}` restores to its end.
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    /// The earliest point a restore from this backup reaches.
    #[schema(format = DateTime)]
    pub stopped_at: String,
    /// The database's size when it was taken.
    pub database_bytes: Option<u64>,
    /// What this backup copied of it (all of it for a full backup).
    pub database_delta_bytes: Option<u64>,
    /// The backup's size in the repository, compressed, with what it
    /// builds on.
    pub repository_bytes: Option<u64>,
    /// What this backup added to the repository.
    pub repository_delta_bytes: Option<u64>,
    /// The WAL segments it needs to be consistent, first and last.
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
    pub lsn_start: Option<String>,
    pub lsn_stop: Option<String>,
    /// The backup this one builds on (null: a full backup).
    pub prior: Option<String>,
    /// pgBackRest found page checksum errors while taking it.
    pub error: bool,
}

/// WAL archiving on the leader.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Archiving {
    /// The leader archives: its archiver answered and its last attempt
    /// succeeded.
    pub ok: bool,
    /// Segments archived and failed since the leader's PostgreSQL started.
    pub archived_count: Option<u64>,
    pub last_archived_wal: Option<String>,
    #[schema(format = DateTime)]
    pub last_archived_at: Option<String>,
    pub failed_count: Option<u64>,
    pub last_failed_wal: Option<String>,
    #[schema(format = DateTime)]
    pub last_failed_at: Option<String>,
    /// The oldest and newest WAL segments the repository holds.
    pub repository_wal_min: Option<String>,
    pub repository_wal_max: Option<String>,
    /// The member read, and when.
    pub member: Option<String>,
    #[schema(format = DateTime)]
    pub checked_at: Option<String>,
    /// Why the repository or the archiver could not be read.
    pub error: Option<String>,
}

/// The points a restore can reach.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryWindow {
    /// The end of the oldest backup.
    #[schema(format = DateTime)]
    pub earliest: String,
    /// Now, as of `checked_at`, when archiving works (a restore archives
    /// the present first); the last archived segment's time when it fails;
    /// null when the leader's archiver could not be read (no PostgreSQL
    /// runs): a later target is tried, and fails if the archive ends first.
    #[schema(format = DateTime)]
    pub latest: Option<String>,
    pub earliest_lsn: Option<String>,
    /// The leader's WAL position when archiving works (null otherwise).
    pub latest_lsn: Option<String>,
}

/// `GET /backups`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Backups {
    pub workspace: String,
    /// pgBackRest's stanza: one per workspace.
    pub stanza: Option<String>,
    /// Oldest first.
    pub backups: Vec<BackupInfo>,
    /// Null without a backup.
    pub recovery_window: Option<RecoveryWindow>,
    pub archiving: Archiving,
    /// The read-only `ansible.status` job that read the repository.
    pub job_id: JobId,
}

/// What `status.yml` reported of the repository (`report.backup`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Catalog {
    pub stanza: Option<String>,
    pub backups: Vec<BackupInfo>,
    pub archiving: Archiving,
    pub current_wal_lsn: Option<String>,
}

impl Catalog {
    /// None: backups are not configured.
    pub fn from_report(report: &Value) -> Option<Catalog> {
        let section = report.get("backup").filter(|b| b.is_object())?;
        let text = |v: &Value| v.as_str().map(String::from);
        let info = section["info"].as_array().and_then(|a| a.first());
        let backups = info
            .and_then(|i| i["backup"].as_array())
            .map(|list| list.iter().filter_map(backup_info).collect())
            .unwrap_or_default();
        let archive = info
            .and_then(|i| i["archive"].as_array())
            .and_then(|a| a.last());
        let archiver = &section["archiver"];
        let mut error = text(&section["error"]);
        // pgBackRest's status codes: 0 ok, 2 no valid backups yet, 6 a
        // backup or expire running; the others say the stanza is unusable.
        if let Some(status) = info.map(|i| &i["status"])
            && status["code"]
                .as_u64()
                .is_some_and(|c| ![0, 2, 6].contains(&c))
        {
            error.get_or_insert_with(|| {
                format!(
                    "pgBackRest: {}",
                    status["message"].as_str().unwrap_or("error")
                )
            });
        }
        let mut archiving = Archiving {
            ok: false,
            archived_count: archiver["archived_count"].as_u64(),
            last_archived_wal: text(&archiver["last_archived_wal"]),
            last_archived_at: text(&archiver["last_archived_time"]),
            failed_count: archiver["failed_count"].as_u64(),
            last_failed_wal: text(&archiver["last_failed_wal"]),
            last_failed_at: text(&archiver["last_failed_time"]),
            repository_wal_min: archive.and_then(|a| text(&a["min"])),
            repository_wal_max: archive.and_then(|a| text(&a["max"])),
            member: text(&section["member"]),
            checked_at: text(&section["checked_at"]),
            error,
        };
        let failing = match (
            parse_time(archiving.last_failed_at.as_deref()),
            parse_time(archiving.last_archived_at.as_deref()),
        ) {
            (Some(failed), Some(archived)) => failed >= archived,
            (Some(_), None) => true,
            _ => false,
        };
        archiving.ok = archiver.is_object() && !failing && archiving.error.is_none();
        Some(Catalog {
            stanza: text(&section["stanza"]),
            backups,
            archiving,
            current_wal_lsn: text(&section["current_wal_lsn"]),
        })
    }

    /// The points a restore can reach; none without a backup.
    pub fn window(&self) -> Option<RecoveryWindow> {
        let oldest = self.backups.iter().find(|b| !b.error)?;
        let (latest, latest_lsn) = if self.archiving.ok {
            (
                self.archiving.checked_at.clone(),
                self.current_wal_lsn.clone(),
            )
        } else {
            (self.archiving.last_archived_at.clone(), None)
        };
        let latest = latest.map(|l| {
            if parse_time(Some(&l)) >= parse_time(Some(&oldest.stopped_at)) {
                l
            } else {
                oldest.stopped_at.clone()
            }
        });
        Some(RecoveryWindow {
            earliest: oldest.stopped_at.clone(),
            latest,
            earliest_lsn: oldest.lsn_stop.clone(),
            latest_lsn,
        })
    }

    pub fn backup(&self, label: &str) -> Option<&BackupInfo> {
        self.backups.iter().find(|b| b.label == label)
    }

    /// The newest backup.
    pub fn last(&self) -> Option<&BackupInfo> {
        self.backups.last()
    }

    /// A line for the cluster's problems when archiving fails.
    pub fn problem(&self) -> Option<String> {
        if self.archiving.ok {
            return None;
        }
        Some(
            match (&self.archiving.error, &self.archiving.last_failed_wal) {
                (Some(error), _) => format!("backups: {error}"),
                (None, Some(wal)) => format!(
                    "archiving: WAL {wal} failed to archive at {}",
                    self.archiving
                        .last_failed_at
                        .as_deref()
                        .unwrap_or("an unknown time")
                ),
                (None, None) => "archiving: the leader's archiver did not answer".into(),
            },
        )
    }

    /// The metrics read from the repository and the archiver.
    pub fn record_metrics(&self, workspace: &str) {
        for kind in super::BackupType::ALL {
            let newest = self
                .backups
                .iter()
                .rev()
                .find(|b| b.kind == kind.as_str() && !b.error)
                .and_then(|b| parse_time(Some(&b.stopped_at)));
            if let Some(at) = newest {
                crate::metrics::backup_succeeded(
                    workspace,
                    kind.as_str(),
                    at.unix_timestamp() as f64,
                );
            }
        }
        if let Some(failed) = self.archiving.failed_count {
            crate::metrics::wal_archive_failed(workspace, failed);
        }
    }
}

/// One entry of pgBackRest's `backup` list in the answer's shape.
fn backup_info(raw: &Value) -> Option<BackupInfo> {
    let time = |v: &Value| {
        v.as_i64()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| t.format(&Rfc3339).ok())
    };
    let text = |v: &Value| v.as_str().map(String::from);
    Some(BackupInfo {
        label: text(&raw["label"])?,
        kind: text(&raw["type"])?,
        started_at: time(&raw["timestamp"]["start"])?,
        stopped_at: time(&raw["timestamp"]["stop"])?,
        database_bytes: raw["info"]["size"].as_u64(),
        database_delta_bytes: raw["info"]["delta"].as_u64(),
        repository_bytes: raw["info"]["repository"]["size"].as_u64(),
        repository_delta_bytes: raw["info"]["repository"]["delta"].as_u64(),
        wal_start: text(&raw["archive"]["start"]),
        wal_stop: text(&raw["archive"]["stop"]),
        lsn_start: text(&raw["lsn"]["start"]),
        lsn_stop: text(&raw["lsn"]["stop"]),
        prior: text(&raw["prior"]),
        error: raw["error"].as_bool().unwrap_or(false),
    })
}

pub(crate) fn parse_time(text: Option<&str>) -> Option<OffsetDateTime> {
    text.and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

/// Reads the repository and the archiver through the status playbook.
pub(crate) async fn read_catalog(
    app: &App,
    workspace: &Workspace,
    actor: &Actor,
) -> Result<(Catalog, JobId), Error> {
    check_configured(workspace)?;
    let read = read_report(app, workspace, None, actor).await?;
    let catalog = Catalog::from_report(&read.report).ok_or_else(|| {
        Error::Conflict(
            "backups are not configured on the cluster yet: run /ansible/run after configure"
                .into(),
        )
    })?;
    catalog.record_metrics(workspace.name());
    Ok((catalog, read.job_id))
}

/// `GET /backups`: the backups, the recovery window and archiving health.
pub async fn backups(app: &App, workspace: &Workspace, actor: &Actor) -> Result<Backups, Error> {
    let (catalog, job_id) = read_catalog(app, workspace, actor).await?;
    Ok(Backups {
        workspace: workspace.name().to_string(),
        stanza: catalog.stanza.clone(),
        recovery_window: catalog.window(),
        backups: catalog.backups,
        archiving: catalog.archiving,
        job_id,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A report as `status.yml` writes it, with pgBackRest 2.45's info.
    pub fn report() -> Value {
        json!({"backup": {
            "stanza": "e2e",
            "member": "primary1",
            "checked_at": "2026-12-07T10:00:00.5Z",
            "current_wal_lsn": "0/9000060",
            "error": null,
            "archiver": {
                "archived_count": 12, "last_archived_wal": "000000010000000000000008",
                "last_archived_time": "2026-12-07T09:59:00Z",
                "failed_count": 1, "last_failed_wal": "000000010000000000000003",
                "last_failed_time": "2026-12-07T09:00:00Z"
            },
            "info": [{
                "name": "e2e",
                "status": {"code": 0, "message": "ok"},
                "archive": [{"id": "15-1", "min": "000000010000000000000001",
                             "max": "000000010000000000000008"}],
                "backup": [
                    {"label": "20261207-090000F", "type": "full", "prior": null, "error": false,
                     "timestamp": {"start": 1796634000, "stop": 1796634010},
                     "archive": {"start": "000000010000000000000002", "stop": "000000010000000000000002"},
                     "lsn": {"start": "0/2000028", "stop": "0/2000100"},
                     "info": {"size": 23000000, "delta": 23000000,
                              "repository": {"size": 3000000, "delta": 3000000}}},
                    {"label": "20261207-090000F_20261207-093000I", "type": "incr",
                     "prior": "20261207-090000F", "error": false,
                     "timestamp": {"start": 1796635800, "stop": 1796635805},
                     "archive": {"start": "000000010000000000000005", "stop": "000000010000000000000005"},
                     "info": {"size": 23100000, "delta": 100000,
                              "repository": {"size": 3010000, "delta": 10000}}}
                ]
            }]
        }})
    }

    #[test]
    fn backups_are_read_oldest_first_with_their_sizes_and_wal() {
        let catalog = Catalog::from_report(&report()).unwrap();
        assert_eq!(catalog.stanza.as_deref(), Some("e2e"));
        let [full, incr] = catalog.backups.as_slice() else {
            panic!("two backups: {:?}", catalog.backups);
        };
        assert_eq!(full.kind, "full");
        assert_eq!(full.stopped_at, "2026-12-07T09:00:10Z");
        assert_eq!(full.lsn_stop.as_deref(), Some("0/2000100"));
        assert_eq!(incr.prior.as_deref(), Some("20261207-090000F"));
        assert_eq!(incr.repository_delta_bytes, Some(10000));
        assert_eq!(incr.lsn_start, None);
        assert_eq!(catalog.last().unwrap().label, incr.label);
        assert_eq!(
            catalog.archiving.repository_wal_max.as_deref(),
            Some("000000010000000000000008")
        );
    }

    #[test]
    fn the_window_runs_from_the_oldest_backup_to_now_while_archiving_works() {
        let catalog = Catalog::from_report(&report()).unwrap();
        assert!(catalog.archiving.ok, "an old failure, archived since");
        assert_eq!(catalog.problem(), None);
        let window = catalog.window().unwrap();
        assert_eq!(window.earliest, "2026-12-07T09:00:10Z");
        assert_eq!(window.latest.as_deref(), Some("2026-12-07T10:00:00.5Z"));
        assert_eq!(window.earliest_lsn.as_deref(), Some("0/2000100"));
        assert_eq!(window.latest_lsn.as_deref(), Some("0/9000060"));
    }

    #[test]
    fn failing_archiving_ends_the_window_at_the_last_archived_segment() {
        let mut report = report();
        report["backup"]["archiver"]["last_failed_time"] = json!("2026-12-07T09:59:30Z");
        report["backup"]["archiver"]["last_failed_wal"] = json!("000000010000000000000009");
        let catalog = Catalog::from_report(&report).unwrap();
        assert!(!catalog.archiving.ok);
        let window = catalog.window().unwrap();
        assert_eq!(window.latest.as_deref(), Some("2026-12-07T09:59:00Z"));
        assert_eq!(window.latest_lsn, None);
        // No PostgreSQL answers: the end is unknown.
        report["backup"]["archiver"] = Value::Null;
        let window = Catalog::from_report(&report).unwrap().window().unwrap();
        assert_eq!(window.latest, None);
        let problem = catalog.problem().unwrap();
        assert!(problem.contains("000000010000000000000009"), "{problem}");
    }

    #[test]
    fn no_backup_no_window_and_no_section_not_configured() {
        let mut report = report();
        report["backup"]["info"][0]["backup"] = json!([]);
        report["backup"]["info"][0]["status"] = json!({"code": 2, "message": "no valid backups"});
        let catalog = Catalog::from_report(&report).unwrap();
        assert!(catalog.window().is_none());
        assert!(catalog.archiving.ok, "no backup yet is no archiving fault");
        report["backup"]["info"][0]["status"] =
            json!({"code": 4, "message": "different cipher type"});
        let catalog = Catalog::from_report(&report).unwrap();
        assert!(catalog.problem().unwrap().contains("different cipher"));
        report["backup"] = Value::Null;
        assert!(Catalog::from_report(&report).is_none());
    }

    #[test]
    fn an_unreadable_repository_is_named() {
        let mut report = report();
        report["backup"]["info"] = Value::Null;
        report["backup"]["error"] = json!("pgBackRest info failed: unable to open repo");
        let catalog = Catalog::from_report(&report).unwrap();
        assert!(!catalog.archiving.ok);
        assert!(catalog.problem().unwrap().contains("unable to open repo"));
    }
}
