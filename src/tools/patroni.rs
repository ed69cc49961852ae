//! The Patroni probe, built the way the other tools are: the `ssh` argv that
//! runs a small Python script on the bastion, the script itself, and the
//! parsing of what it prints into the cluster's view. Nothing of HTTP or
//! state: `cluster::ha` runs it and keeps the views.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::HostAddress;

/// Patroni's REST API port on every member.
pub const REST_PORT: u16 = 8008;

/// Run on the bastion by `python3 -` with the REST API's port and the
/// members' addresses as arguments: GETs `/cluster` and `/primary` of every
/// member in parallel
/// threads (1 s each, no proxy), then prints one JSON object keyed by
/// address: `{"<address>": {"cluster_status": 200, "cluster": {...},
/// "primary_status": 503, "primary_error": "..."}}`.
pub const PROBE_SCRIPT: &str = r#"
import json, sys, threading, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
port, out = sys.argv[1], {a: {} for a in sys.argv[2:]}
def get(address, path):
    host = "[%s]" % address if ":" in address else address
    entry = out[address]
    try:
        with opener.open("http://%s:%s/%s" % (host, port, path), timeout=1.0) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except Exception as e:
        entry[path + "_error"] = str(e) or type(e).__name__
        return
    entry[path + "_status"] = status
    if path == "cluster":
        try:
            entry["cluster"] = json.loads(body)
        except ValueError:
            entry["cluster_error"] = "the answer is not JSON"
threads = [threading.Thread(target=get, args=(a, p)) for a in out for p in ("cluster", "primary")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
"#;

/// A database host of the inventory: its name (Patroni's member name) and
/// its private address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryHost {
    pub name: String,
    pub address: String,
}

/// The database hosts of a `hosts.ini` as `configure` writes it: the hosts
/// of the `[primary]`, `[replicas]` and `[db]` groups, in order, each with
/// its `private_address` (else its `ansible_host`). A host whose address is
/// not an address is left out (it could not be probed safely).
pub fn inventory_hosts(hosts_ini: &str) -> Vec<InventoryHost> {
    let mut hosts = Vec::new();
    let mut in_db_group = false;
    for line in hosts_ini.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(group) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_db_group = matches!(group, "primary" | "replicas" | "db");
            continue;
        }
        if !in_db_group {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let vars: Vec<&str> = words.collect();
        let var = |key: &str| vars.iter().find_map(|w| w.strip_prefix(key));
        let address = var("private_address=").or_else(|| var("ansible_host="));
        if let Some(address) = address.and_then(|a| HostAddress::parse(a).ok())
            && is_member_name(name)
            && !hosts.iter().any(|h: &InventoryHost| h.name == name)
        {
            hosts.push(InventoryHost {
                name: name.to_string(),
                address: address.as_str().to_string(),
            });
        }
    }
    hosts
}

/// Inventory names as `configure` writes them (`primary1`, `replica2`).
pub fn is_member_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// `ssh -F <ssh_config> [-o ControlMaster...] bastion python3 - <addresses>`:
/// the script goes on standard input, so the remote shell sees only the
/// addresses (validated), never code to quote. `control_path` adds a shared
/// connection when the generated `ssh_config` has none.
pub fn probe_args(
    ssh_config: &Path,
    control_path: Option<&str>,
    hosts: &[InventoryHost],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-F".into(), ssh_config.into()];
    if let Some(path) = control_path {
        for option in [
            "ControlMaster=auto".to_string(),
            "ControlPersist=60s".to_string(),
            format!("ControlPath={path}"),
        ] {
            args.push("-o".into());
            args.push(option.into());
        }
    }
    args.extend([
        "bastion".into(),
        "python3".into(),
        "-".into(),
        REST_PORT.to_string().into(),
    ]);
    args.extend(hosts.iter().map(|h| OsString::from(&h.address)));
    args
}

/// The cluster as Patroni's members answered the probe.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ClusterView {
    /// The member whose `/primary` answered 200; none when no member (or
    /// more than one) did.
    pub leader: Option<String>,
    /// The leader's timeline.
    pub timeline: Option<u64>,
    /// The inventory's database hosts, then members Patroni knows that the
    /// inventory does not.
    pub members: Vec<MemberView>,
    /// Why there is no leader, and where the answers disagree.
    pub problems: Vec<String>,
}

/// One member as Patroni's `/cluster` lists it; fields it did not give are
/// null.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct MemberView {
    pub name: String,
    pub address: String,
    /// PostgreSQL's port (Patroni's `port`).
    pub port: Option<u16>,
    /// `leader`, `replica` or `sync_standby`.
    pub role: Option<String>,
    /// `running` (Patroni 4: `streaming` for a replica that streams),
    /// `starting`, `stopped`, `creating replica`, ...
    pub state: Option<String>,
    pub timeline: Option<u64>,
    /// Bytes behind the leader (Patroni's `lag`); null when unknown.
    pub lag_bytes: Option<u64>,
    pub pending_restart: bool,
    /// Whether its REST API answered the probe.
    pub reachable: bool,
}

impl ClusterView {
    pub fn member(&self, name: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The members' names, for messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }

    /// Why there is no leader, in one line.
    pub fn no_leader_reason(&self) -> String {
        if self.problems.is_empty() {
            "no member answers as the primary".into()
        } else {
            self.problems.join("; ")
        }
    }
}

/// The view from what the script printed and the inventory's hosts.
pub fn parse_probe(printed: &str, hosts: &[InventoryHost]) -> Result<ClusterView, String> {
    let answers: BTreeMap<String, Value> = serde_json::from_str(printed.trim())
        .map_err(|e| format!("the probe printed no readable answer: {e}"))?;
    let answer = |address: &str| answers.get(address).cloned().unwrap_or(Value::Null);
    let answered =
        |a: &Value| a.get("cluster_status").is_some() || a.get("primary_status").is_some();
    let as_primary: Vec<&InventoryHost> = hosts
        .iter()
        .filter(|h| answer(&h.address)["primary_status"] == 200)
        .collect();

    // Patroni's own member list, from the leader's answer when it gave one,
    // else from the first member that did: they read the same DCS.
    let listing = as_primary
        .iter()
        .copied()
        .chain(hosts)
        .map(|h| answer(&h.address))
        .find(|a| a["cluster_status"] == 200 && a["cluster"]["members"].is_array())
        .map(|a| {
            a["cluster"]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        });
    let listed = listing.clone().unwrap_or_default();
    let entry = |name: &str| listed.iter().find(|m| m["name"] == name).cloned();

    let mut members: Vec<MemberView> = hosts
        .iter()
        .map(|h| {
            let mut member = member_view(&h.name, &h.address, entry(&h.name).as_ref());
            member.reachable = answered(&answer(&h.address));
            member
        })
        .collect();
    for other in &listed {
        let Some(name) = other["name"].as_str() else {
            continue;
        };
        if !hosts.iter().any(|h| h.name == name) {
            let address = other["host"].as_str().unwrap_or_default();
            members.push(member_view(name, address, Some(other)));
        }
    }

    let mut problems = Vec::new();
    if !hosts.iter().any(|h| answered(&answer(&h.address))) {
        let why = hosts
            .first()
            .and_then(|h| {
                answer(&h.address)["primary_error"]
                    .as_str()
                    .map(String::from)
            })
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        problems.push(format!("no member's Patroni REST API answered{why}"));
    } else if listing.is_none() {
        problems.push("no member answered Patroni's /cluster".into());
    }
    let listed_leader = members
        .iter()
        .find(|m| m.role.as_deref() == Some("leader"))
        .map(|m| m.name.clone());
    let leader = match as_primary.as_slice() {
        [one] => Some(one.name.clone()),
        [] => {
            if let Some(name) = &listed_leader {
                problems.push(format!(
                    "Patroni lists {name} as leader but it does not answer as the primary"
                ));
            } else if problems.is_empty() {
                problems
                    .push("no member answers as the primary (the cluster has no leader)".into());
            }
            None
        }
        several => {
            let names: Vec<&str> = several.iter().map(|h| h.name.as_str()).collect();
            problems.push(format!(
                "several members answer as the primary: {}",
                names.join(", ")
            ));
            None
        }
    };
    if let (Some(leader), Some(listed)) = (&leader, &listed_leader)
        && leader != listed
    {
        problems.push(format!(
            "{leader} answers as the primary but Patroni lists {listed} as leader"
        ));
    }
    let timeline = leader
        .as_deref()
        .and_then(|l| members.iter().find(|m| m.name == l))
        .and_then(|m| m.timeline);
    Ok(ClusterView {
        leader,
        timeline,
        members,
        problems,
    })
}

/// A member from its entry in Patroni's `/cluster` (none: not listed).
fn member_view(name: &str, address: &str, entry: Option<&Value>) -> MemberView {
    let entry = entry.cloned().unwrap_or(Value::Null);
    let role = entry["role"].as_str().map(|r| match r {
        // Older Patroni and `/patroni` say master/primary.
        "master" | "primary" => "leader".to_string(),
        other => other.to_string(),
    });
    MemberView {
        name: name.to_string(),
        address: address.to_string(),
        port: entry["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
        role,
        state: entry["state"].as_str().map(String::from),
        timeline: entry["timeline"].as_u64(),
        // "unknown" while a member is rewound or cloned.
        lag_bytes: entry["lag"].as_u64(),
        pending_restart: entry["pending_restart"].as_bool().unwrap_or(false),
        reachable: false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hosts() -> Vec<InventoryHost> {
        inventory_hosts(
            "[bastion]\nbastion1 ansible_host=203.0.113.10\n\n[primary]\nprimary1 ansible_host=10.0.1.10\n\n\
             [replicas]\nreplica1 ansible_host=10.0.2.11\nreplica2 ansible_host=10.0.3.12\n\n\
             [db:children]\nprimary\nreplicas\n\n[all:vars]\nansible_user=ubuntu\n",
        )
    }

    fn cluster(leader: &str) -> Value {
        let member = |name: &str, host: &str| {
            let role = if name == leader { "leader" } else { "replica" };
            let mut m = json!({"name": name, "role": role, "state": "running", "host": host,
                "port": 5432, "timeline": 3, "api_url": format!("http://{host}:8008/patroni")});
            if name != leader {
                m["lag"] = json!(0);
            }
            m
        };
        json!({"members": [member("primary1", "10.0.1.10"), member("replica1", "10.0.2.11"),
            member("replica2", "10.0.3.12")]})
    }

    fn answers(leader: &str) -> Value {
        let mut all = json!({});
        for (name, address) in [
            ("primary1", "10.0.1.10"),
            ("replica1", "10.0.2.11"),
            ("replica2", "10.0.3.12"),
        ] {
            all[address] = json!({"cluster_status": 200, "cluster": cluster(leader),
                "primary_status": if name == leader { 200 } else { 503 }});
        }
        all
    }

    #[test]
    fn the_inventory_gives_the_database_hosts_in_order_without_the_bastion() {
        let names: Vec<(String, String)> =
            hosts().into_iter().map(|h| (h.name, h.address)).collect();
        assert_eq!(
            names,
            [
                ("primary1".to_string(), "10.0.1.10".to_string()),
                ("replica1".into(), "10.0.2.11".into()),
                ("replica2".into(), "10.0.3.12".into())
            ]
        );
    }

    #[test]
    fn a_private_address_in_the_inventory_is_preferred_and_a_host_counted_once() {
        let hosts = inventory_hosts(
            "[primary]\nprimary1 ansible_host=203.0.113.7 private_address=10.0.1.10\n\
             [db]\nprimary1 ansible_host=203.0.113.7\nreplica1 ansible_host=10.0.2.11\n",
        );
        let found: Vec<(&str, &str)> = hosts
            .iter()
            .map(|h| (h.name.as_str(), h.address.as_str()))
            .collect();
        assert_eq!(
            found,
            [("primary1", "10.0.1.10"), ("replica1", "10.0.2.11")]
        );
    }

    #[test]
    fn an_inventory_address_that_is_not_an_address_is_not_probed() {
        let hosts = inventory_hosts("[primary]\nprimary1 ansible_host=10.0.1.10;reboot\n");
        assert!(hosts.is_empty(), "{hosts:?}");
    }

    #[test]
    fn the_probe_runs_the_script_on_the_bastion_with_the_addresses_only() {
        let args = probe_args(Path::new("/w/ssh_config"), None, &hosts());
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-F",
                "/w/ssh_config",
                "bastion",
                "python3",
                "-",
                "8008",
                "10.0.1.10",
                "10.0.2.11",
                "10.0.3.12"
            ]
        );
        let shared = probe_args(Path::new("/w/ssh_config"), Some("%d/.ssh/pgc-%C"), &hosts());
        assert!(shared.iter().any(|a| a == "ControlPath=%d/.ssh/pgc-%C"));
    }

    #[test]
    fn the_leader_is_the_member_answering_as_primary_with_its_timeline() {
        let view = parse_probe(&answers("replica1").to_string(), &hosts()).unwrap();
        assert_eq!(view.leader.as_deref(), Some("replica1"));
        assert_eq!(view.timeline, Some(3));
        assert!(view.problems.is_empty(), "{:?}", view.problems);
        let primary1 = view.member("primary1").unwrap();
        assert_eq!(primary1.role.as_deref(), Some("replica"));
        assert_eq!(primary1.lag_bytes, Some(0));
        assert_eq!(view.member("replica1").unwrap().port, Some(5432));
        assert!(primary1.reachable);
    }

    #[test]
    fn an_unknown_lag_is_null_and_a_pending_restart_is_kept() {
        let mut all = answers("primary1");
        all["10.0.1.10"]["cluster"]["members"][2]["lag"] = json!("unknown");
        all["10.0.1.10"]["cluster"]["members"][2]["pending_restart"] = json!(true);
        let view = parse_probe(&all.to_string(), &hosts()).unwrap();
        let replica2 = view.member("replica2").unwrap();
        assert_eq!(replica2.lag_bytes, None);
        assert!(replica2.pending_restart);
    }

    #[test]
    fn no_member_answering_as_primary_is_no_leader_with_the_reason() {
        let mut all = answers("primary1");
        all["10.0.1.10"] = json!({"cluster_error": "timed out", "primary_error": "timed out"});
        let view = parse_probe(&all.to_string(), &hosts()).unwrap();
        assert_eq!(view.leader, None);
        assert_eq!(
            view.no_leader_reason(),
            "Patroni lists primary1 as leader but it does not answer as the primary"
        );
        assert!(!view.member("primary1").unwrap().reachable);
    }

    #[test]
    fn two_members_answering_as_primary_is_no_leader() {
        let mut all = answers("primary1");
        all["10.0.2.11"]["primary_status"] = json!(200);
        let view = parse_probe(&all.to_string(), &hosts()).unwrap();
        assert_eq!(view.leader, None);
        assert_eq!(
            view.problems,
            ["several members answer as the primary: primary1, replica1"]
        );
    }

    #[test]
    fn no_answer_at_all_says_so() {
        let all = json!({
            "10.0.1.10": {"cluster_error": "[Errno 111] Connection refused", "primary_error": "[Errno 111] Connection refused"},
            "10.0.2.11": {}, "10.0.3.12": {}
        });
        let view = parse_probe(&all.to_string(), &hosts()).unwrap();
        assert_eq!(view.leader, None);
        assert_eq!(
            view.no_leader_reason(),
            "no member's Patroni REST API answered ([Errno 111] Connection refused)"
        );
    }

    #[test]
    fn a_disagreement_between_primary_and_the_listing_is_a_problem_not_a_leader_change() {
        let mut all = answers("primary1");
        for address in ["10.0.1.10", "10.0.2.11", "10.0.3.12"] {
            all[address]["cluster"] = cluster("replica1");
        }
        let view = parse_probe(&all.to_string(), &hosts()).unwrap();
        assert_eq!(view.leader.as_deref(), Some("primary1"));
        assert_eq!(
            view.problems,
            ["primary1 answers as the primary but Patroni lists replica1 as leader"]
        );
    }

    #[test]
    fn unreadable_output_is_an_error() {
        assert!(parse_probe("Traceback (most recent call last):", &hosts()).is_err());
    }
}
