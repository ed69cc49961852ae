//! Backup schedules: a cron expression per backup type and a time zone for
//! each workspace, kept in the job store; when each fires, and which type is
//! due over a span of time. The scheduler that acts on them is
//! [`super::scheduler`].

use std::str::FromStr;

use chrono::{DateTime, Days, NaiveDate, SecondsFormat};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::BackupType;
use crate::cluster::{App, Error};
use crate::store::{JobStatus, ScheduleFailure, ScheduleRecord, ScheduledRun};
use crate::workspace::Workspace;

/// Longer expressions are refused before they are parsed.
const MAX_EXPRESSION: usize = 200;

/// The days of a whole cycle of the Gregorian calendar.
const DAYS_IN_400_YEARS: u64 = 146_097;

/// The nicknames cron knows besides the five fields.
const NICKNAMES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// The body of `PUT /backup-schedule`: when to take each type of backup,
/// and the time zone that is read in.
// The fields are read as any JSON value so that every bad one is named at
// once (`Schedule::parse`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"full": "0 1 * * 0", "diff": "0 1 * * 3", "incr": "0 1 * * 1,2,4-6",
    "timezone": "Europe/Paris"}))]
pub struct ScheduleRequest {
    /// When to take a full backup: a cron expression of 5 fields (minute,
    /// hour, day of month, month, day of week) or a nickname (`@daily`,
    /// `@weekly`...). No seconds.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub full: Option<Value>,
    /// When to take a differential backup, in the same form; none if absent.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub diff: Option<Value>,
    /// When to take an incremental backup, in the same form; none if absent.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub incr: Option<Value>,
    /// The IANA time zone the expressions are read in (default `UTC`).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "Europe/Paris")]
    pub timezone: Option<Value>,
}

/// A 5-field cron expression, as given.
#[derive(Clone, Debug)]
pub struct CronExpr {
    text: String,
    cron: Cron,
}

impl CronExpr {
    /// The expression, or why it is refused.
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        let text = text.trim();
        if text.len() > MAX_EXPRESSION {
            return Err(format!(
                "is too long: a cron expression has at most {MAX_EXPRESSION} characters"
            ));
        }
        let fields = text.split_whitespace().count();
        if text.starts_with('@') {
            if !NICKNAMES.contains(&text.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "is not a nickname cron knows: use one of {}",
                    NICKNAMES.join(", ")
                ));
            }
        } else if fields == 6 || fields == 7 {
            return Err(format!(
                "has {fields} fields: seconds and years are not supported; use the 5 fields \
                 minute hour day-of-month month day-of-week"
            ));
        } else if fields != 5 {
            return Err(format!(
                "must have the 5 fields minute hour day-of-month month day-of-week, not {fields}"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| format!("is not a valid cron expression: {e}"))?;
        Ok(CronExpr {
            text: text.to_string(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether any minute matches the expression. The Gregorian calendar,
    /// weekdays included, repeats every 400 years: the days of 400 years from
    /// `from` are looked at, each at the first hour and minute that match.
    /// (The search for the next fire time of one that never fires takes the
    /// parser's whole search limit: most of a minute.)
    fn ever_fires(&self, from: OffsetDateTime) -> bool {
        let pattern = &self.cron.pattern;
        let hour = (0..24).find(|h| pattern.hour_match(*h).unwrap_or(false));
        let minute = (0..60).find(|m| pattern.minute_match(*m).unwrap_or(false));
        let (Some(hour), Some(minute)) = (hour, minute) else {
            return false;
        };
        let month = u8::from(from.month()).into();
        let Some(first) = NaiveDate::from_ymd_opt(from.year(), month, from.day().into()) else {
            return false;
        };
        (0..DAYS_IN_400_YEARS).any(|offset| {
            first
                .checked_add_days(Days::new(offset))
                .and_then(|day| day.and_hms_opt(hour, minute, 0))
                .is_some_and(|at| self.cron.is_time_matching(&at).unwrap_or(false))
        })
    }

    /// The first fire time after `after`, read in `zone`; none when no date
    /// matches the expression.
    fn next_after(&self, after: OffsetDateTime, zone: Tz) -> Option<DateTime<Tz>> {
        // Fire times are whole minutes: the fraction of a second is dropped,
        // so a fire time equal to `after` is never "after" it.
        let start = DateTime::from_timestamp(after.unix_timestamp(), 0)?.with_timezone(&zone);
        self.cron.find_next_occurrence(&start, false).ok()
    }
}

/// A checked schedule: an expression for each type it takes, largest type
/// first, and the time zone they are read in.
#[derive(Clone, Debug)]
pub struct Schedule {
    crons: Vec<(BackupType, CronExpr)>,
    zone: Tz,
}

impl Schedule {
    /// Every problem of the body at once, each named by its field; an
    /// expression that never fires after `now` is refused too.
    pub fn parse(request: &ScheduleRequest, now: OffsetDateTime) -> Result<Schedule, Error> {
        let mut problems = Map::new();
        let zone = match &request.timezone {
            None | Some(Value::Null) => Some(Tz::UTC),
            Some(Value::String(name)) => parse_zone(name)
                .map_err(|e| problems.insert("timezone".into(), json!(e)))
                .ok(),
            Some(_) => {
                problems.insert(
                    "timezone".into(),
                    json!("must be a string: an IANA time zone name like UTC or Europe/Paris"),
                );
                None
            }
        };
        let mut crons = Vec::new();
        for (kind, value) in [
            (BackupType::Full, &request.full),
            (BackupType::Diff, &request.diff),
            (BackupType::Incr, &request.incr),
        ] {
            let parsed = match value {
                None | Some(Value::Null) if kind == BackupType::Full => {
                    Err("is required: when to take the full backups, as a cron expression".into())
                }
                None | Some(Value::Null) => continue,
                Some(Value::String(text)) => CronExpr::parse(text),
                Some(_) => Err("must be a string: a cron expression of 5 fields".into()),
            };
            match parsed {
                Ok(cron) => crons.push((kind, cron)),
                Err(reason) => {
                    problems.insert(kind.as_str().into(), json!(reason));
                }
            }
        }
        if let Some(zone) = zone {
            for (kind, cron) in &crons {
                if !cron.ever_fires(now) || cron.next_after(now, zone).is_none() {
                    problems.insert(
                        kind.as_str().into(),
                        json!("never fires: no date matches it"),
                    );
                }
            }
        }
        match zone {
            Some(zone) if problems.is_empty() => Ok(Schedule { crons, zone }),
            _ => Err(Error::fields(problems)),
        }
    }

    /// The schedule a record holds (its expressions were checked when it
    /// was saved).
    pub fn of_record(record: &ScheduleRecord) -> Result<Schedule, String> {
        let mut crons = Vec::new();
        for (kind, text) in [
            (BackupType::Full, Some(&record.full)),
            (BackupType::Diff, record.diff.as_ref()),
            (BackupType::Incr, record.incr.as_ref()),
        ] {
            if let Some(text) = text {
                let cron = CronExpr::parse(text).map_err(|e| format!("{}: {e}", kind.as_str()))?;
                crons.push((kind, cron));
            }
        }
        let zone = parse_zone(&record.timezone).map_err(|e| format!("timezone: {e}"))?;
        Ok(Schedule { crons, zone })
    }

    /// The largest type with a fire time in `(since, now]`.
    pub fn due(&self, since: OffsetDateTime, now: OffsetDateTime) -> Option<BackupType> {
        self.crons
            .iter()
            .find(|(_, cron)| {
                cron.next_after(since, self.zone)
                    .is_some_and(|at| at.timestamp() <= now.unix_timestamp())
            })
            .map(|(kind, _)| *kind)
    }

    /// Each type's next fire time after `now`, in RFC 3339 with the offset
    /// of the schedule's time zone.
    pub fn next_runs(&self, now: OffsetDateTime) -> NextRuns {
        let next = |kind: BackupType| {
            self.crons
                .iter()
                .find(|(k, _)| *k == kind)
                .and_then(|(_, cron)| cron.next_after(now, self.zone))
                .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
        };
        NextRuns {
            full: next(BackupType::Full).unwrap_or_default(),
            diff: next(BackupType::Diff),
            incr: next(BackupType::Incr),
        }
    }

    fn expression(&self, kind: BackupType) -> Option<String> {
        self.crons
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, cron)| cron.as_str().to_string())
    }
}

/// An IANA time zone name.
fn parse_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name.trim())
        .map_err(|_| "is not an IANA time zone name like UTC or Europe/Paris".to_string())
}

/// The next fire time of each type the schedule takes.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextRuns {
    #[schema(format = DateTime)]
    pub full: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
    pub incr: Option<String>,
}

/// A backup the schedule started, and how its job stands now.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastRun {
    #[serde(flatten)]
    pub run: ScheduledRun,
    /// The job's status; null when it is no longer recorded.
    pub status: Option<JobStatus>,
}

/// A workspace's backup schedule, when it fires next and what it started.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"workspace": "default", "full": "0 1 * * 0", "incr": "0 1 * * 1-6",
    "timezone": "Europe/Paris", "saved_at": "2026-11-23T10:00:00Z",
    "next_runs": {"full": "2026-11-29T01:00:00+01:00", "incr": "2026-11-24T01:00:00+01:00"},
    "last_runs": [], "pending": null, "last_error": null}))]
pub struct ScheduleView {
    pub workspace: String,
    pub full: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub incr: Option<String>,
    pub timezone: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub saved_at: OffsetDateTime,
    pub next_runs: NextRuns,
    /// The last backup the schedule started, per type, largest type first.
    pub last_runs: Vec<LastRun>,
    /// A backup that came due while the workspace was busy: it starts once
    /// the workspace is free.
    pub pending: Option<BackupType>,
    /// The last backup the schedule could not start, and why; cleared when
    /// one starts.
    pub last_error: Option<ScheduleFailure>,
}

/// Sets (or replaces) the workspace's schedule. Fire times count from now;
/// what the scheduler recorded (last runs, a waiting backup, the last error)
/// is kept.
pub async fn save_schedule(
    app: &App,
    workspace: &Workspace,
    request: &ScheduleRequest,
) -> Result<ScheduleView, Error> {
    // To the millisecond, as the store keeps it.
    let now = OffsetDateTime::now_utc();
    let now = now.replace_millisecond(now.millisecond()).unwrap_or(now);
    let schedule = Schedule::parse(request, now)?;
    let _held = app.schedules.lock().await;
    if !workspace.exists() {
        return Err(Error::NotFound(format!(
            "no workspace '{}': it was deleted meanwhile",
            workspace.name()
        )));
    }
    let store = app.runner.store();
    let previous = store
        .schedule(workspace.name())
        .await
        .map_err(Error::of_store)?;
    let (last_runs, pending, last_error) = previous
        .map(|p| (p.last_runs, p.pending, p.last_error))
        .unwrap_or_default();
    let record = ScheduleRecord {
        workspace: workspace.name().to_string(),
        full: schedule.expression(BackupType::Full).unwrap_or_default(),
        diff: schedule.expression(BackupType::Diff),
        incr: schedule.expression(BackupType::Incr),
        timezone: schedule.zone.name().to_string(),
        saved_at: now,
        considered_at: now,
        pending,
        last_runs,
        last_error,
    };
    store
        .put_schedule(record.clone())
        .await
        .map_err(Error::of_store)?;
    Ok(view(app, &schedule, record, now).await)
}

/// The workspace's schedule; none is [`Error::NotFound`].
pub async fn schedule_of(app: &App, workspace: &Workspace) -> Result<ScheduleView, Error> {
    let record = app
        .runner
        .store()
        .schedule(workspace.name())
        .await
        .map_err(Error::of_store)?
        .ok_or_else(|| no_schedule(workspace))?;
    let schedule = Schedule::of_record(&record).map_err(Error::internal)?;
    Ok(view(app, &schedule, record, OffsetDateTime::now_utc()).await)
}

/// Removes the workspace's schedule; none is [`Error::NotFound`].
pub async fn delete_schedule(app: &App, workspace: &Workspace) -> Result<(), Error> {
    let _held = app.schedules.lock().await;
    let deleted = app
        .runner
        .store()
        .delete_schedule(workspace.name())
        .await
        .map_err(Error::of_store)?;
    if deleted {
        Ok(())
    } else {
        Err(no_schedule(workspace))
    }
}

/// Removes a deleted workspace's schedule, so a workspace created later
/// under its name does not inherit it.
pub(crate) async fn forget_schedule(app: &App, workspace: &Workspace) {
    let _held = app.schedules.lock().await;
    if let Err(err) = app.runner.store().delete_schedule(workspace.name()).await {
        tracing::warn!(workspace = workspace.name(), error = %err, "could not remove the backup schedule of a deleted workspace");
    }
}

fn no_schedule(workspace: &Workspace) -> Error {
    Error::NotFound(format!(
        "workspace '{}' has no backup schedule: PUT one first",
        workspace.name()
    ))
}

async fn view(
    app: &App,
    schedule: &Schedule,
    record: ScheduleRecord,
    now: OffsetDateTime,
) -> ScheduleView {
    let mut last_runs = Vec::new();
    for run in record.last_runs {
        let status = match app.runner.job(run.job_id).await {
            Ok(job) => job.map(|j| j.status),
            Err(_) => None,
        };
        last_runs.push(LastRun { run, status });
    }
    ScheduleView {
        workspace: record.workspace,
        full: record.full,
        diff: record.diff,
        incr: record.incr,
        timezone: record.timezone,
        saved_at: record.saved_at,
        next_runs: schedule.next_runs(now),
        last_runs,
        pending: record.pending.as_deref().and_then(BackupType::parse),
        last_error: record.last_error,
    }
}
#[cfg(test)]
pub(super) mod tests {
    use time::format_description::well_known::Rfc3339;

    use super::*;

    /// An instant in UTC: `"2026-11-23 10:00"` or with seconds.
    pub(crate) fn at(text: &str) -> OffsetDateTime {
        let mut text = text.replace(' ', "T");
        if text.len() == 16 {
            text.push_str(":00");
        }
        OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339).unwrap()
    }

    fn request(body: Value) -> ScheduleRequest {
        serde_json::from_value(body).unwrap()
    }

    /// The problems of a refused body, by field.
    fn refused(body: Value) -> Map<String, Value> {
        match Schedule::parse(&request(body), at("2026-11-23 10:00")) {
            Err(Error::Invalid { fields, .. }) => fields,
            other => panic!("refused, not {other:?}"),
        }
    }

    pub(crate) fn schedule(body: Value) -> Schedule {
        Schedule::parse(&request(body), at("2026-11-23 10:00")).unwrap()
    }

    /// A record of `body` saved and last considered at `considered_at`.
    pub(crate) fn record(body: &Value, considered_at: OffsetDateTime) -> ScheduleRecord {
        let text = |k: &str| body[k].as_str().map(String::from);
        ScheduleRecord {
            workspace: "default".into(),
            full: text("full").unwrap(),
            diff: text("diff"),
            incr: text("incr"),
            timezone: text("timezone").unwrap_or_else(|| "UTC".into()),
            saved_at: considered_at,
            considered_at,
            pending: None,
            last_runs: Vec::new(),
            last_error: None,
        }
    }

    #[test]
    fn five_field_expressions_and_nicknames_are_accepted_in_a_time_zone() {
        let s = schedule(json!({"full": " 0 1 * * SUN ", "diff": "@daily",
            "incr": "*/15 2-5 * * 1-5", "timezone": "Europe/Paris"}));
        assert_eq!(s.expression(BackupType::Full).unwrap(), "0 1 * * SUN");
        assert_eq!(s.zone.name(), "Europe/Paris");
        let utc = schedule(json!({"full": "0 1 * * *", "timezone": null}));
        assert_eq!(utc.zone.name(), "UTC");
        assert!(utc.expression(BackupType::Incr).is_none());
    }

    #[test]
    fn an_expression_with_seconds_or_years_is_refused_naming_its_field() {
        let fields = refused(json!({"full": "0 0 1 * * *", "incr": "0 0 1 * * * 2027"}));
        assert!(
            fields["full"].as_str().unwrap().contains("seconds"),
            "{fields:?}"
        );
        assert!(
            fields["incr"].as_str().unwrap().contains("7 fields"),
            "{fields:?}"
        );
    }

    #[test]
    fn every_bad_field_is_named_at_once_with_its_reason() {
        let fields = refused(json!({"diff": "61 * * * *", "incr": 5, "timezone": "Mars/Base"}));
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            ["diff", "full", "incr", "timezone"]
        );
        assert!(fields["full"].as_str().unwrap().starts_with("is required"));
        assert!(
            fields["diff"]
                .as_str()
                .unwrap()
                .starts_with("is not a valid cron expression"),
            "{fields:?}"
        );
        assert!(
            fields["incr"]
                .as_str()
                .unwrap()
                .starts_with("must be a string")
        );
        assert!(fields["timezone"].as_str().unwrap().contains("IANA"));
        for (bad, reason) in [
            ("", "not 0"),
            ("* * *", "not 3"),
            ("@reboot", "nickname"),
            ("0 1 * * MONDAY-ish", "not a valid cron expression"),
        ] {
            let fields = refused(json!({"full": bad}));
            assert!(
                fields["full"].as_str().unwrap().contains(reason),
                "{bad:?}: {fields:?}"
            );
        }
        assert!(
            refused(json!({"full": "* ".repeat(150)}))["full"]
                .as_str()
                .unwrap()
                .starts_with("is too long")
        );
    }

    #[test]
    fn a_single_bad_field_is_named_in_the_message() {
        let Err(Error::Invalid { message, .. }) =
            Schedule::parse(&request(json!({})), at("2026-11-23 10:00"))
        else {
            panic!("refused");
        };
        assert!(
            message.starts_with("invalid field 'full': is required"),
            "{message}"
        );
    }

    #[test]
    fn an_expression_no_date_matches_never_fires_and_is_refused_at_once() {
        let started = std::time::Instant::now();
        // The last one is an empty list of minutes, which the parser takes.
        for never in [
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "0 0 31 2 +1",
            ", * * * *",
        ] {
            let fields = refused(json!({"full": never}));
            assert_eq!(fields["full"], "never fires: no date matches it", "{never}");
        }
        // Searching for their next fire time would take the parser's whole
        // search limit: minutes here.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Rare ones fire.
        for rare in ["0 0 29 2 *", "0 0 29 2 +1", "0 0 13 * +5", "0 0 L 2 *"] {
            let parsed = Schedule::parse(&request(json!({"full": rare})), at("2026-11-23 10:00"));
            assert!(parsed.is_ok(), "{rare}");
        }
    }

    #[test]
    fn nothing_is_due_before_a_fire_time_and_a_fire_time_is_due_once() {
        let s = schedule(json!({"full": "0 1 * * *"}));
        let saved = at("2026-11-23 00:30");
        assert_eq!(s.due(saved, at("2026-11-23 00:59:59.9")), None);
        assert_eq!(s.due(saved, at("2026-11-23 01:00")), Some(BackupType::Full));
        // Considered at the fire time (or just after): done with it.
        assert_eq!(
            s.due(at("2026-11-23 01:00:00.2"), at("2026-11-23 01:00:15")),
            None
        );
        assert_eq!(s.due(at("2026-11-23 01:00"), at("2026-11-24 00:59")), None);
    }

    #[test]
    fn fire_times_are_read_in_the_schedule_time_zone() {
        let paris = schedule(json!({"full": "0 3 * * *", "incr": "30 * * * *",
            "timezone": "Europe/Paris"}));
        // 03:00 in Paris is 02:00 UTC in winter.
        let runs = paris.next_runs(at("2026-11-23 10:00"));
        assert_eq!(runs.full, "2026-11-24T03:00:00+01:00");
        assert_eq!(runs.incr.as_deref(), Some("2026-11-23T11:30:00+01:00"));
        assert_eq!(runs.diff, None);
        assert_eq!(
            paris.due(at("2026-11-24 01:59"), at("2026-11-24 02:00:01")),
            Some(BackupType::Full)
        );
        // And 01:00 UTC in summer.
        let summer = paris.next_runs(at("2026-07-01 10:00"));
        assert_eq!(summer.full, "2026-07-02T03:00:00+02:00");
        let utc = schedule(json!({"full": "0 3 * * *"}));
        assert_eq!(
            utc.next_runs(at("2026-11-23 10:00")).full,
            "2026-11-24T03:00:00Z"
        );
    }

    #[test]
    fn a_local_time_the_clock_goes_through_twice_fires_once() {
        // 2026-10-25 in Paris: 02:30 is at 00:30 and again at 01:30 UTC.
        let s = schedule(json!({"full": "30 2 * * *", "timezone": "Europe/Paris"}));
        let first = at("2026-10-25 00:30");
        assert_eq!(s.due(at("2026-10-25 00:00"), first), Some(BackupType::Full));
        assert_eq!(s.due(first, at("2026-10-25 12:00")), None);
        assert_eq!(s.next_runs(first).full, "2026-10-26T02:30:00+01:00");
    }

    #[test]
    fn a_stored_schedule_reads_back_as_it_was_saved() {
        let body = json!({"full": "0 1 * * 0", "incr": "0 1 * * 1-6", "timezone": "Asia/Tokyo"});
        let saved = schedule(body.clone());
        let read = Schedule::of_record(&record(&body, at("2026-11-23 10:00"))).unwrap();
        let now = at("2026-11-23 10:00");
        assert_eq!(
            serde_json::to_value(read.next_runs(now)).unwrap(),
            serde_json::to_value(saved.next_runs(now)).unwrap()
        );
        let mut bad = record(&body, now);
        bad.timezone = "Nowhere".into();
        assert!(
            Schedule::of_record(&bad)
                .unwrap_err()
                .starts_with("timezone")
        );
    }
}
