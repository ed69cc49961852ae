//! The checks an operation must pass on the cluster as Patroni sees it, and
//! the inputs `operate.yml` gets when it does: nothing runs on a refusal.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::operate::{MAXIMUM_LAG_BYTES, Operation};
use crate::cluster::Error;
use crate::tools::patroni::{ClusterView, MemberView};

/// What `operate.yml` is told besides the operation and the members.
struct Inputs {
    /// The member the calls are made from (an inventory host).
    via: String,
    leader: Option<String>,
    candidate: Option<String>,
    member: Option<String>,
    scheduled_at: Option<String>,
    pending_only: bool,
    switchover_leader: bool,
    restart_order: Vec<String>,
}

impl Inputs {
    fn via(via: String, leader: Option<String>) -> Inputs {
        Inputs {
            via,
            leader,
            candidate: None,
            member: None,
            scheduled_at: None,
            pending_only: true,
            switchover_leader: false,
            restart_order: Vec::new(),
        }
    }
}

/// Refuses what cannot work on the cluster as it is, and gives the
/// playbook's inputs (all but the result file).
pub fn plan(
    operation: &Operation,
    view: &ClusterView,
    workspace: &str,
) -> Result<Map<String, Value>, Error> {
    let inputs = match operation {
        Operation::Switchover {
            candidate,
            scheduled_at,
        } => switchover(view, candidate.as_deref(), *scheduled_at)?,
        Operation::Failover { candidate } => failover(view, candidate)?,
        Operation::Restart {
            member,
            pending_only,
            switchover_leader,
        } => restart(view, member.as_deref(), *pending_only, *switchover_leader)?,
        Operation::Reinit { member } => reinit(view, member)?,
    };
    let members: Map<String, Value> = view
        .members
        .iter()
        .map(|m| (m.name.clone(), json!(m.address)))
        .collect();
    let mut vars = Map::new();
    for (key, value) in [
        ("pgcluster_operation", json!(operation.name())),
        ("pgcluster_workspace", json!(workspace)),
        ("pgcluster_leader", json!(inputs.leader.unwrap_or_default())),
        (
            "pgcluster_candidate",
            json!(inputs.candidate.unwrap_or_default()),
        ),
        ("pgcluster_member", json!(inputs.member.unwrap_or_default())),
        (
            "pgcluster_scheduled_at",
            json!(inputs.scheduled_at.unwrap_or_default()),
        ),
        ("pgcluster_pending_only", json!(inputs.pending_only)),
        (
            "pgcluster_switchover_leader",
            json!(inputs.switchover_leader),
        ),
        ("pgcluster_restart_order", json!(inputs.restart_order)),
        ("pgcluster_via", json!(inputs.via)),
        ("pgcluster_members", Value::Object(members)),
    ] {
        vars.insert(key.into(), value);
    }
    Ok(vars)
}

/// A leader, every member running, and a candidate (named, or one Patroni
/// may pick) within `maximum_lag_on_failover`. Called from the candidate.
fn switchover(
    view: &ClusterView,
    wanted: Option<&str>,
    scheduled_at: Option<OffsetDateTime>,
) -> Result<Inputs, Error> {
    let current = needs_leader(view, "a switchover", "use failover")?;
    if let Some(m) = view.members.iter().find(|m| !is_running(m)) {
        return Err(Error::Conflict(format!(
            "{} is not running ({}): a switchover needs every member running",
            m.name,
            state_of(m)
        )));
    }
    match wanted {
        Some(wanted) => {
            let m = member_named(view, "candidate", wanted)?;
            if m.name == current {
                return Err(Error::field(
                    "candidate",
                    format!("{wanted} is already the leader"),
                ));
            }
            fit_to_lead(m)?;
            if let Some(sync) = sync_standby(view).filter(|sync| sync.name != m.name) {
                return Err(Error::Conflict(format!(
                    "synchronous mode: only the synchronous standby {} may take over \
                     (Patroni refuses {wanted}); ask for it, or leave candidate out",
                    sync.name
                )));
            }
        }
        None if best_replica(view, &current).is_none() => {
            return Err(Error::Conflict(format!(
                "no replica can take over: each lags more than {MAXIMUM_LAG_BYTES} bytes \
                 (maximum_lag_on_failover) or its lag is unknown"
            )));
        }
        None => {}
    }
    let mut inputs = Inputs::via(wanted.unwrap_or(&current).to_string(), Some(current));
    inputs.candidate = wanted.map(String::from);
    inputs.scheduled_at = scheduled_at.and_then(|t| t.format(&Rfc3339).ok());
    Ok(inputs)
}

/// No healthy leader, and a running candidate. Called from the candidate;
/// the old leader is the one Patroni still lists, if any.
fn failover(view: &ClusterView, wanted: &str) -> Result<Inputs, Error> {
    if let Some(current) = &view.leader {
        return Err(Error::Conflict(format!(
            "{current} is a healthy leader: use switchover"
        )));
    }
    let m = member_named(view, "candidate", wanted)?;
    if !is_running(m) || !m.reachable {
        return Err(Error::Conflict(format!(
            "candidate {wanted} is not running ({}): it cannot be promoted",
            state_of(m)
        )));
    }
    let listed_leader = view
        .members
        .iter()
        .find(|m| m.role.as_deref() == Some("leader"))
        .map(|m| m.name.clone());
    let mut inputs = Inputs::via(wanted.to_string(), listed_leader);
    inputs.candidate = Some(wanted.to_string());
    Ok(inputs)
}

/// One member, or every member with the leader last; each must answer.
/// With `switchover_leader` the replica closest to the leader takes over
/// first. Called from the leader.
fn restart(
    view: &ClusterView,
    wanted: Option<&str>,
    pending_only: bool,
    switchover_leader: bool,
) -> Result<Inputs, Error> {
    let current = needs_leader(view, "a restart", "see the cluster's members first")?;
    let order: Vec<String> = match wanted {
        Some(wanted) => vec![member_named(view, "member", wanted)?.name.clone()],
        None => view
            .members
            .iter()
            .filter(|m| m.name != current)
            .chain(view.member(&current))
            .map(|m| m.name.clone())
            .collect(),
    };
    if let Some(m) = view
        .members
        .iter()
        .find(|m| order.contains(&m.name) && !m.reachable)
    {
        return Err(Error::Conflict(format!(
            "{}'s Patroni REST API does not answer: it cannot be restarted",
            m.name
        )));
    }
    let mut inputs = Inputs::via(current.clone(), Some(current.clone()));
    if switchover_leader && order.contains(&current) {
        let Some(best) = best_replica(view, &current) else {
            return Err(Error::Conflict(format!(
                "no replica can take over from the leader {current} (none running within \
                 {MAXIMUM_LAG_BYTES} bytes): restart it in place instead"
            )));
        };
        inputs.candidate = Some(best.name.clone());
    }
    inputs.restart_order = order;
    inputs.pending_only = pending_only;
    inputs.switchover_leader = switchover_leader;
    Ok(inputs)
}

/// A replica, rebuilt from the leader. Called from the leader.
fn reinit(view: &ClusterView, wanted: &str) -> Result<Inputs, Error> {
    let current = needs_leader(view, "a reinit", "a replica is rebuilt from the leader")?;
    if member_named(view, "member", wanted)?.name == current {
        return Err(Error::Conflict(format!(
            "{wanted} is the leader: a leader cannot be reinitialized; switch over first"
        )));
    }
    let mut inputs = Inputs::via(current.clone(), Some(current));
    inputs.member = Some(wanted.to_string());
    Ok(inputs)
}

/// The replica fit to lead: in synchronous mode the synchronous standby
/// (the only one Patroni promotes), else the one closest to the leader.
fn best_replica<'v>(view: &'v ClusterView, leader: &str) -> Option<&'v MemberView> {
    if let Some(sync) = sync_standby(view) {
        return fit_to_lead(sync).is_ok().then_some(sync);
    }
    view.members
        .iter()
        .filter(|m| m.name != leader && fit_to_lead(m).is_ok())
        .min_by_key(|m| m.lag_bytes)
}

/// The synchronous standby, when synchronous mode is on.
fn sync_standby(view: &ClusterView) -> Option<&MemberView> {
    view.members
        .iter()
        .find(|m| m.role.as_deref() == Some("sync_standby"))
}

/// The current leader, or a conflict saying why there is none.
fn needs_leader(view: &ClusterView, what: &str, instead: &str) -> Result<String, Error> {
    view.leader.clone().ok_or_else(|| {
        Error::Conflict(format!(
            "the cluster has no leader ({}): {what} needs one; {instead}",
            view.no_leader_reason()
        ))
    })
}

fn member_named<'v>(
    view: &'v ClusterView,
    field: &str,
    name: &str,
) -> Result<&'v MemberView, Error> {
    view.member(name).ok_or_else(|| {
        Error::field(
            field,
            format!(
                "no member '{name}' in the cluster (members: {})",
                view.names()
            ),
        )
    })
}

/// A replica that may lead: running, and within `maximum_lag_on_failover`.
fn fit_to_lead(m: &MemberView) -> Result<(), Error> {
    if !is_running(m) {
        return Err(Error::Conflict(format!(
            "candidate {} is not running ({})",
            m.name,
            state_of(m)
        )));
    }
    match m.lag_bytes {
        None => Err(Error::Conflict(format!(
            "candidate {}'s lag is unknown: it may not have the leader's latest changes",
            m.name
        ))),
        Some(lag) if lag > MAXIMUM_LAG_BYTES => Err(Error::Conflict(format!(
            "candidate {} lags {lag} bytes behind the leader, more than {MAXIMUM_LAG_BYTES} \
             (maximum_lag_on_failover)",
            m.name
        ))),
        Some(_) => Ok(()),
    }
}

/// Running PostgreSQL: Patroni 4 says `streaming` for a replica that
/// streams from the leader, 3.x `running` for every member.
fn is_running(m: &MemberView) -> bool {
    matches!(m.state.as_deref(), Some("running" | "streaming"))
}

fn state_of(m: &MemberView) -> String {
    match (&m.state, m.reachable) {
        (Some(state), _) => format!("state: {state}"),
        (None, true) => "not a member Patroni lists".into(),
        (None, false) => "its Patroni REST API does not answer".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::operate::{FailoverRequest, ReinitRequest, SwitchoverRequest, read_result};
    use super::*;
    use crate::store::JobKind;

    fn member(name: &str, role: &str, lag: Option<u64>) -> MemberView {
        MemberView {
            name: name.into(),
            address: format!("10.0.0.{}", name.len()),
            port: Some(5432),
            role: Some(role.into()),
            state: Some("running".into()),
            timeline: Some(1),
            lag_bytes: lag,
            pending_restart: false,
            reachable: true,
        }
    }

    fn view() -> ClusterView {
        ClusterView {
            leader: Some("primary1".into()),
            timeline: Some(1),
            members: vec![
                member("primary1", "leader", None),
                member("replica1", "replica", Some(0)),
                member("replica2", "replica", Some(4096)),
            ],
            problems: vec![],
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn switchover(candidate: Option<&str>) -> Operation {
        Operation::Switchover {
            candidate: candidate.map(String::from),
            scheduled_at: None,
        }
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::Invalid { fields, .. } => fields.keys().next().cloned().unwrap_or_default(),
            other => panic!("expected a refused field, got {other:?}"),
        }
    }

    #[test]
    fn a_switchover_to_a_healthy_replica_goes_through_the_candidate() {
        let vars = plan(&switchover(Some("replica1")), &view(), "default").unwrap();
        assert_eq!(vars["pgcluster_leader"], "primary1");
        assert_eq!(vars["pgcluster_candidate"], "replica1");
        assert_eq!(vars["pgcluster_via"], "replica1");
        assert_eq!(vars["pgcluster_members"]["replica2"], "10.0.0.8");
    }

    #[test]
    fn patroni_4_replicas_in_state_streaming_count_as_running() {
        let mut v = view();
        v.members[1].state = Some("streaming".into());
        v.members[2].state = Some("streaming".into());
        let vars = plan(&switchover(Some("replica1")), &v, "default").unwrap();
        assert_eq!(vars["pgcluster_candidate"], "replica1");
        assert!(plan(&switchover(None), &v, "default").is_ok());
        v.leader = None;
        assert!(failover(&v, "replica2").is_ok());
    }

    #[test]
    fn in_synchronous_mode_only_the_synchronous_standby_may_take_over() {
        let mut view = view();
        view.members[2].role = Some("sync_standby".into());
        let refused = plan(&switchover(Some("replica1")), &view, "default").unwrap_err();
        assert!(
            matches!(&refused, Error::Conflict(m) if m.contains("synchronous standby replica2")),
            "{refused:?}"
        );
        let vars = plan(&switchover(Some("replica2")), &view, "default").unwrap();
        assert_eq!(vars["pgcluster_candidate"], "replica2");
        assert_eq!(best_replica(&view, "primary1").unwrap().name, "replica2");
    }

    #[test]
    fn a_switchover_to_an_unknown_member_names_the_candidate() {
        let err = plan(&switchover(Some("replica9")), &view(), "default").unwrap_err();
        assert_eq!(field_of(err), "candidate");
    }

    #[test]
    fn a_switchover_to_the_leader_is_refused() {
        let err = plan(&switchover(Some("primary1")), &view(), "default").unwrap_err();
        assert_eq!(field_of(err), "candidate");
    }

    #[test]
    fn a_candidate_lagging_more_than_a_mebibyte_is_a_conflict() {
        let mut v = view();
        v.members[2].lag_bytes = Some(MAXIMUM_LAG_BYTES + 1);
        let err = plan(&switchover(Some("replica2")), &v, "default").unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("maximum_lag_on_failover")),
            "{err:?}"
        );
    }

    #[test]
    fn a_switchover_without_a_leader_or_with_a_stopped_member_is_a_conflict() {
        let mut v = view();
        v.leader = None;
        v.problems = vec!["no member answers as the primary".into()];
        let err = plan(&switchover(None), &v, "default").unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("no leader")),
            "{err:?}"
        );
        let mut v = view();
        v.members[1].state = Some("stopped".into());
        let err = plan(&switchover(None), &v, "default").unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.starts_with("replica1 is not running")),
            "{err:?}"
        );
    }

    #[test]
    fn a_scheduled_time_must_be_rfc_3339_and_in_the_future() {
        let at = |raw: &str| SwitchoverRequest {
            scheduled_at: Some(raw.into()),
            ..SwitchoverRequest::default()
        };
        assert_eq!(
            field_of(Operation::switchover(&at("tomorrow"), now()).unwrap_err()),
            "scheduled_at"
        );
        assert_eq!(
            field_of(Operation::switchover(&at("2020-01-01T00:00:00Z"), now()).unwrap_err()),
            "scheduled_at"
        );
        let later = (now() + time::Duration::hours(1)).format(&Rfc3339).unwrap();
        assert!(Operation::switchover(&at(&later), now()).is_ok());
    }

    #[test]
    fn a_failover_needs_the_workspace_name_as_confirmation() {
        let request = |confirm: Option<&str>| FailoverRequest {
            candidate: Some("replica1".into()),
            confirm: confirm.map(String::from),
            run_async: false,
        };
        for confirm in [None, Some("prod")] {
            let err = Operation::failover(&request(confirm), "default").unwrap_err();
            assert_eq!(field_of(err), "confirm");
        }
        assert!(Operation::failover(&request(Some("default")), "default").is_ok());
    }

    #[test]
    fn a_failover_with_a_healthy_leader_says_to_use_switchover() {
        let op = Operation::Failover {
            candidate: "replica1".into(),
        };
        let err = plan(&op, &view(), "default").unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("use switchover")),
            "{err:?}"
        );
        let mut v = view();
        v.leader = None;
        let vars = plan(&op, &v, "default").unwrap();
        assert_eq!(vars["pgcluster_leader"], "primary1");
        assert_eq!(vars["pgcluster_via"], "replica1");
    }

    #[test]
    fn a_rolling_restart_takes_the_replicas_first_and_the_leader_last() {
        let mut v = view();
        v.members.swap(0, 2);
        let op = Operation::Restart {
            member: None,
            pending_only: true,
            switchover_leader: true,
        };
        let vars = plan(&op, &v, "default").unwrap();
        assert_eq!(
            vars["pgcluster_restart_order"],
            json!(["replica2", "replica1", "primary1"])
        );
        // The replica closest to the leader takes over.
        assert_eq!(vars["pgcluster_candidate"], "replica1");
        assert_eq!(vars["pgcluster_via"], "primary1");
    }

    #[test]
    fn the_leader_cannot_be_reinitialized() {
        let op = Operation::Reinit {
            member: "primary1".into(),
        };
        let err = plan(&op, &view(), "default").unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("is the leader")),
            "{err:?}"
        );
        let op = Operation::Reinit {
            member: "nobody".into(),
        };
        assert_eq!(
            field_of(plan(&op, &view(), "default").unwrap_err()),
            "member"
        );
    }

    #[test]
    fn a_member_name_with_a_shell_character_is_refused_before_anything_else() {
        let request = ReinitRequest {
            member: Some("replica1;reboot".into()),
            run_async: false,
        };
        assert_eq!(field_of(Operation::reinit(&request).unwrap_err()), "member");
    }

    #[test]
    fn a_result_file_is_read_in_the_shape_of_its_operation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(
            &path,
            r#"{"old_leader": "primary1", "new_leader": "replica1", "timeline": 2,
                "write_unavailable_seconds": 1.4, "extra": 1}"#,
        )
        .unwrap();
        let value = read_result(JobKind::ClusterSwitchover, &path).unwrap();
        assert_eq!(
            value,
            json!({"old_leader": "primary1", "new_leader": "replica1", "timeline": 2,
                "write_unavailable_seconds": 1.4})
        );
        assert!(read_result(JobKind::ClusterReinit, &path).is_err());
        assert!(read_result(JobKind::ClusterRestart, &dir.path().join("none")).is_err());
    }
}
