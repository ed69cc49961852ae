//! Point-in-time recovery in place: the request is checked against the
//! recovery window the repository gives (nothing runs on a refusal), then
//! `restore.yml` restores the leader, re-bootstraps Patroni on the new
//! timeline and clones the replicas again.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::catalog::{Catalog, parse_time, read_catalog};
use super::{check_configured, cluster_job, lenient_u64};
use crate::cluster::{Actor, App, Error};
use crate::runner::JobHandle;
use crate::store::JobKind;
use crate::workspace::Workspace;

/// The body of `POST /restore`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"target": {"time": "2026-12-07T09:30:00Z"}, "confirm": "default"}))]
pub struct RestoreRequest {
    /// Where to: `"latest"` (everything archived), `{"time": RFC 3339}`,
    /// `{"backup": label}` (the end of that backup) or `{"lsn": "0/3000148"}`.
    #[serde(default)]
    #[schema(required = true, value_type = Object)]
    pub target: Option<Value>,
    /// The workspace's name, to confirm: the whole cluster goes back.
    #[serde(default)]
    #[schema(required = true)]
    pub confirm: Option<String>,
    /// Answer `202` at once with the job instead of waiting for its end.
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

/// A checked restore target.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Latest,
    Time(OffsetDateTime),
    Backup(String),
    Lsn(String),
}

/// A restore that ended: its job's result.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct Restored {
    /// The member leading the restored cluster.
    pub leader: String,
    /// The timeline the cluster carries on with.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub timeline: Option<u64>,
    /// The backup pgBackRest restored from.
    pub backup: Option<String>,
    /// The target as the playbook was given it (`type`, `target`).
    #[schema(value_type = Object)]
    pub target: Value,
    #[schema(format = DateTime)]
    pub restored_at: String,
}

impl Target {
    /// Reads `target` and `confirm`; every bad field is named.
    pub fn parse(
        request: &RestoreRequest,
        workspace: &str,
        now: OffsetDateTime,
    ) -> Result<Target, Error> {
        let mut fields = Map::new();
        if request.confirm.as_deref() != Some(workspace) {
            fields.insert(
                "confirm".into(),
                json!(format!(
                    "must be the workspace's name, '{workspace}', to confirm a restore"
                )),
            );
        }
        let target = Target::read(request.target.as_ref(), now);
        match (target, fields.is_empty()) {
            (Ok(target), true) => Ok(target),
            (Ok(_), false) => Err(Error::fields(fields)),
            (Err((field, reason)), _) => {
                fields.insert(field.into(), json!(reason));
                Err(Error::fields(fields))
            }
        }
    }

    fn read(raw: Option<&Value>, now: OffsetDateTime) -> Result<Target, (&'static str, String)> {
        const SHAPES: &str =
            "must be \"latest\", {\"time\": RFC 3339}, {\"backup\": label} or {\"lsn\": LSN}";
        let object = match raw {
            None | Some(Value::Null) => {
                return Err(("target", format!("is required: it {SHAPES}")));
            }
            Some(Value::String(s)) if s == "latest" => return Ok(Target::Latest),
            Some(Value::Object(object)) if object.len() == 1 => object,
            Some(_) => return Err(("target", SHAPES.into())),
        };
        let (key, value) = object.iter().next().expect("one entry");
        let text = value.as_str();
        match key.as_str() {
            "time" => {
                let time = text
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                    .ok_or((
                        "target.time",
                        "must be an RFC 3339 time with its offset, like 2026-12-07T09:30:00Z"
                            .into(),
                    ))?;
                if time > now {
                    return Err(("target.time", "is in the future".into()));
                }
                Ok(Target::Time(time))
            }
            "backup" => match text.filter(|t| is_label(t)) {
                Some(label) => Ok(Target::Backup(label.to_string())),
                None => Err((
                    "target.backup",
                    "is not a pgBackRest backup label (like 20261207-090000F or \
                     20261207-090000F_20261207-093000I)"
                        .into(),
                )),
            },
            "lsn" => match text.filter(|t| lsn_value(t).is_some()) {
                Some(lsn) => Ok(Target::Lsn(lsn.to_uppercase())),
                None => Err((
                    "target.lsn",
                    "is not a WAL position (two hexadecimal numbers: like 0/3000148)".into(),
                )),
            },
            _ => Err(("target", SHAPES.into())),
        }
    }

    /// Refuses a target the repository cannot reach, naming the window.
    pub(crate) fn check(&self, catalog: &Catalog) -> Result<(), Error> {
        let Some(window) = catalog.window() else {
            return Err(Error::Conflict(
                "the repository holds no backup to restore from: take one first (POST /backups)"
                    .into(),
            ));
        };
        let outside = |what: String| {
            Error::Conflict(format!(
                "{what} is outside the recovery window: from {} ({}) to {} ({})",
                window.earliest,
                window.earliest_lsn.as_deref().unwrap_or("LSN unknown"),
                window.latest.as_deref().unwrap_or("an end unknown"),
                window.latest_lsn.as_deref().unwrap_or("LSN unknown"),
            ))
        };
        match self {
            Target::Latest => Ok(()),
            Target::Time(time) => {
                let earliest = parse_time(Some(&window.earliest));
                let latest = parse_time(window.latest.as_deref());
                if earliest.is_some_and(|e| *time < e) || latest.is_some_and(|l| *time > l) {
                    Err(outside(format!(
                        "target.time {}",
                        time.format(&Rfc3339).unwrap_or_default()
                    )))
                } else {
                    Ok(())
                }
            }
            Target::Lsn(lsn) => {
                let at = lsn_value(lsn);
                let earliest = window.earliest_lsn.as_deref().and_then(lsn_value);
                let latest = window.latest_lsn.as_deref().and_then(lsn_value);
                if earliest.is_some_and(|e| at < Some(e)) || latest.is_some_and(|l| at > Some(l)) {
                    Err(outside(format!("target.lsn {lsn}")))
                } else {
                    Ok(())
                }
            }
            Target::Backup(label) => match catalog.backup(label) {
                Some(_) => Ok(()),
                None => {
                    let labels: Vec<&str> =
                        catalog.backups.iter().map(|b| b.label.as_str()).collect();
                    Err(Error::Conflict(format!(
                        "target.backup: the repository has no backup {label} (it has: {})",
                        labels.join(", ")
                    )))
                }
            },
        }
    }

    /// What `restore.yml` takes as `pgbackrest_restore`.
    fn playbook_vars(&self) -> Value {
        match self {
            Target::Latest => json!({"type": "latest", "target": ""}),
            // UTC to the microsecond, PostgreSQL's resolution: pgBackRest
            // refuses more digits.
            Target::Time(time) => {
                let t = time.to_offset(time::UtcOffset::UTC);
                let target = format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.microsecond()
                );
                json!({"type": "time", "target": target})
            }
            Target::Backup(label) => json!({"type": "backup", "target": label}),
            Target::Lsn(lsn) => json!({"type": "lsn", "target": lsn}),
        }
    }
}

/// `20261207-090000F`, optionally `_20261207-093000D` or `…I`.
fn is_label(text: &str) -> bool {
    let stamp = |s: &str| {
        s.len() == 15
            && s.char_indices()
                .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() })
    };
    let Some((full, rest)) = text.split_at_checked(16) else {
        return false;
    };
    let full_ok = stamp(&full[..15]) && full.ends_with('F');
    full_ok
        && (rest.is_empty()
            || rest.len() == 17
                && rest.starts_with('_')
                && stamp(&rest[1..16])
                && (rest.ends_with('D') || rest.ends_with('I')))
}

/// An LSN (`X/Y`, hexadecimal) as a number.
fn lsn_value(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let part = |p: &str| {
        (1..=8)
            .contains(&p.len())
            .then(|| u64::from_str_radix(p, 16).ok())
            .flatten()
    };
    Some((part(high)? << 32) | part(low)?)
}

/// Checks the request against the repository, then starts the restore.
pub async fn restore(
    app: &App,
    workspace: &Workspace,
    request: &RestoreRequest,
    actor: &Actor,
) -> Result<JobHandle, Error> {
    let target = Target::parse(request, workspace.name(), OffsetDateTime::now_utc())?;
    check_configured(workspace)?;
    let (catalog, _) = read_catalog(app, workspace, actor).await?;
    target.check(&catalog)?;
    let vars = json!({"pgbackrest_restore": target.playbook_vars()});
    let record = json!({
        "target": request.target,
        "confirm": request.confirm,
        "async": request.run_async,
    });
    let mut spec = cluster_job(app, workspace, JobKind::ClusterRestore, vars, record).await?;
    actor.stamp(&mut spec);
    app.submit(spec).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::backup::catalog::tests::report;

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-12-07T10:00:01Z", &Rfc3339).unwrap()
    }

    fn parse(body: Value) -> Result<Target, Error> {
        let request: RestoreRequest = serde_json::from_value(body).unwrap();
        Target::parse(&request, "default", now())
    }

    fn refused_fields(body: Value) -> Vec<String> {
        match parse(body.clone()) {
            Err(Error::Invalid { fields, .. }) => fields.keys().cloned().collect(),
            other => panic!("{body} refused with fields: {other:?}"),
        }
    }

    #[test]
    fn each_target_shape_is_read() {
        let ok = |target: Value| parse(json!({"target": target, "confirm": "default"})).unwrap();
        assert_eq!(ok(json!("latest")), Target::Latest);
        assert!(matches!(
            ok(json!({"time": "2026-12-07T10:30:00+01:00"})),
            Target::Time(_)
        ));
        assert_eq!(
            ok(json!({"backup": "20261207-090000F_20261207-093000I"})),
            Target::Backup("20261207-090000F_20261207-093000I".into())
        );
        assert_eq!(
            ok(json!({"lsn": "0/3000148"})),
            Target::Lsn("0/3000148".into())
        );
        let time = ok(json!({"time": "2026-12-07T10:30:00+01:00"}));
        assert_eq!(
            time.playbook_vars(),
            json!({"type": "time", "target": "2026-12-07T09:30:00.000000Z"})
        );
        let precise = ok(json!({"time": "2026-12-07T09:30:00.123456789Z"}));
        assert_eq!(
            precise.playbook_vars()["target"],
            "2026-12-07T09:30:00.123456Z"
        );
    }

    #[test]
    fn bad_targets_and_confirmations_name_their_field() {
        let cases = [
            (json!({"target": "latest"}), vec!["confirm"]),
            (
                json!({"target": "latest", "confirm": "other"}),
                vec!["confirm"],
            ),
            (json!({"confirm": "default"}), vec!["target"]),
            (
                json!({"target": "now", "confirm": "default"}),
                vec!["target"],
            ),
            (
                json!({"target": {"time": "x", "lsn": "0/1"}, "confirm": "default"}),
                vec!["target"],
            ),
            (
                json!({"target": {"when": "x"}, "confirm": "default"}),
                vec!["target"],
            ),
            (
                json!({"target": {"time": "yesterday"}, "confirm": "default"}),
                vec!["target.time"],
            ),
            (
                json!({"target": {"time": "2026-12-07 09:00"}, "confirm": "default"}),
                vec!["target.time"],
            ),
            (
                json!({"target": {"time": "2027-01-01T00:00:00Z"}, "confirm": "default"}),
                vec!["target.time"],
            ),
            (
                json!({"target": {"backup": "latest"}, "confirm": "default"}),
                vec!["target.backup"],
            ),
            (
                json!({"target": {"backup": "20261207-090000I"}, "confirm": "default"}),
                vec!["target.backup"],
            ),
            (
                json!({"target": {"lsn": "0/XYZ"}, "confirm": "default"}),
                vec!["target.lsn"],
            ),
            (
                json!({"target": {"lsn": 5}, "confirm": "default"}),
                vec!["target.lsn"],
            ),
            (
                json!({"target": {"lsn": "123456789/0"}}),
                vec!["confirm", "target.lsn"],
            ),
        ];
        for (body, fields) in cases {
            assert_eq!(refused_fields(body.clone()), fields, "{body}");
        }
    }

    #[test]
    fn targets_outside_the_window_are_conflicts_naming_it() {
        let catalog = Catalog::from_report(&report()).unwrap();
        let time = |t: &str| Target::Time(OffsetDateTime::parse(t, &Rfc3339).unwrap());
        assert!(time("2026-12-07T09:30:00Z").check(&catalog).is_ok());
        assert!(Target::Latest.check(&catalog).is_ok());
        assert!(Target::Lsn("0/5000000".into()).check(&catalog).is_ok());
        assert!(
            Target::Backup("20261207-090000F".into())
                .check(&catalog)
                .is_ok()
        );
        for target in [
            time("2026-12-07T08:59:00Z"),
            time("2026-12-07T10:00:01Z"),
            Target::Lsn("0/1000000".into()),
            Target::Lsn("1/0".into()),
            Target::Backup("20261201-090000F".into()),
        ] {
            let Err(Error::Conflict(message)) = target.check(&catalog) else {
                panic!("{target:?} refused");
            };
            assert!(
                message.contains("2026-12-07T09:00:10Z") || message.contains("20261207-090000F"),
                "{message}"
            );
        }
        let mut empty = catalog.clone();
        empty.backups.clear();
        assert!(matches!(
            Target::Latest.check(&empty),
            Err(Error::Conflict(_))
        ));
    }
}
