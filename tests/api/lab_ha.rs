//! High availability on the lab cluster built by the end-to-end test: with
//! synchronous mode on, the leader's host is cut off while a writer commits;
//! a replica leads and takes writes, losing no acknowledged commit; the old
//! host comes back as a read-only replica; the server records the automatic
//! leader change; a re-run keeps the new leader and changes nothing; a
//! switchover through the API hands over to the synchronous standby.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{ENVIRONMENT, LAB_ROOT, Timer, installed_postgresql, recap_changed, set_links};
use crate::helpers::TestApp;

/// SQL on a member over its own socket, from this machine: sockets are not
/// namespaced, so this works while the member's network is cut.
pub(super) fn local_psql(address: &str, sql: &str, seconds: u32) -> (bool, String) {
    let socket = format!("{LAB_ROOT}/{ENVIRONMENT}/hosts/{address}/run");
    let seconds = seconds.to_string();
    let output = std::process::Command::new("timeout")
        .args([
            seconds.as_str(),
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &socket,
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .current_dir("/")
        .output()
        .expect("psql runs");
    let text = if output.status.success() {
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    } else {
        String::from_utf8_lossy(&output.stderr).trim().to_string()
    };
    (output.status.success(), text)
}

/// Polls `check` every 200 ms for at most `limit`; the seconds it took.
pub(super) async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<f64> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

pub async fn failover_and_back(app: &TestApp, t: &mut Timer, replicas: usize) {
    let cluster = app.get("/cluster").await;
    assert_eq!(cluster.body["healthy"], true, "{:?}", cluster.body);
    assert_eq!(cluster.body["leader"], "primary1", "{:?}", cluster.body);
    let members = cluster.body["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), replicas + 1, "{members:?}");
    let sync: Vec<&str> = members
        .iter()
        .filter(|m| m["role"] == "sync_standby")
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        sync.len(),
        1,
        "synchronous mode has one sync standby: {members:?}"
    );
    let address = |name: &str| -> String {
        members
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["address"].as_str())
            .unwrap_or_else(|| panic!("{name} in {members:?}"))
            .to_string()
    };
    let old = address("primary1");
    let timeline = cluster.body["timeline"].as_u64().unwrap();
    let (ok, out) = local_psql(
        &old,
        "create table if not exists ha_acked (id int primary key)",
        10,
    );
    assert!(ok, "{out}");

    // A writer on the leader's socket: an id counts once its commit returned.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, old) = (stop.clone(), old.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                if local_psql(&old, &format!("insert into ha_acked values ({id})"), 3).0 {
                    acked.push(id);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The leader's host loses its network.
    set_links("primary", &["priv0"], false);
    let others: Vec<(String, String)> = members
        .iter()
        .filter(|m| m["name"] != "primary1")
        .map(|m| {
            let name = m["name"].as_str().unwrap().to_string();
            let address = address(&name);
            (name, address)
        })
        .collect();
    let mut new_leader = None;
    let took = within(Duration::from_secs(90), || {
        new_leader = others
            .iter()
            .find(|(_, a)| {
                local_psql(a, "select pg_is_in_recovery()", 2) == (true, "f".into())
                    && local_psql(a, "create table if not exists ha_probe (t text)", 2).0
            })
            .cloned();
        new_leader.is_some()
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    let took = took.expect("a replica leads and takes writes after the leader's host is cut off");
    t.0.push(("failover: new writable leader".into(), took));
    eprintln!("e2e failover: a new leader took writes {took:.1}s after the cut");
    let (leader, leader_address) = new_leader.unwrap();
    assert!(
        sync.contains(&leader.as_str()),
        "the sync standby {sync:?} leads, not {leader}"
    );

    // No acknowledged commit is lost (synchronous mode).
    assert!(
        acked.len() > 5,
        "the writer committed before the cut: {acked:?}"
    );
    let (ok, count) = local_psql(
        &leader_address,
        &format!(
            "select count(*) from ha_acked where id = any('{{{}}}'::int[])",
            acked
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        10,
    );
    assert!(ok, "{count}");
    assert_eq!(
        count,
        acked.len().to_string(),
        "every acknowledged id survives"
    );

    // Writes on the new leader reach the remaining replicas.
    let (ok, out) = local_psql(
        &leader_address,
        "insert into ha_probe values ('after failover')",
        10,
    );
    assert!(ok, "{out}");
    for (name, address) in others.iter().filter(|(n, _)| *n != leader) {
        let seen = within(Duration::from_secs(30), || {
            local_psql(
                address,
                "select count(*) from ha_probe where t = 'after failover'",
                2,
            ) == (true, "1".into())
        })
        .await;
        assert!(seen.is_some(), "{name} follows the new leader");
    }

    // The old host comes back: a replica on the new timeline, read-only.
    set_links("primary", &["priv0"], true);
    let back = within(Duration::from_secs(120), || {
        local_psql(
            &old,
            "select count(*) from ha_probe where t = 'after failover'",
            2,
        ) == (true, "1".into())
    })
    .await;
    let back = back.unwrap_or_else(|| {
        let log = std::fs::read_to_string(format!(
            "{LAB_ROOT}/{ENVIRONMENT}/hosts/{old}/log/patroni.log"
        ))
        .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "the old leader rejoins as a replica; end of its Patroni log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    t.0.push(("old leader rejoined".into(), back));
    eprintln!(
        "e2e failover: the old leader replayed the new leader's writes {back:.1}s after its link came back"
    );
    assert_eq!(
        local_psql(&old, "select pg_is_in_recovery()", 5),
        (true, "t".into())
    );
    assert!(!local_psql(&old, "insert into ha_probe values ('old')", 5).0);
    // A member cloned again streams once the leader has written past the
    // segment its copy ended in: the lab is idle, so write and switch WAL.
    let mut view = serde_json::Value::Null;
    for _ in 0..30 {
        local_psql(
            &leader_address,
            "insert into ha_probe values ('tick'); select pg_switch_wal()",
            5,
        );
        view = app.get("/cluster").await.body;
        if view["healthy"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if view["healthy"] != true {
        let log = std::fs::read_to_string(format!(
            "{LAB_ROOT}/{ENVIRONMENT}/hosts/{old}/log/patroni.log"
        ))
        .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "end of the old leader's Patroni log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert_eq!(view["healthy"], true, "{view}");
    assert_eq!(view["leader"], leader.as_str(), "{view}");
    assert!(view["timeline"].as_u64().unwrap() > timeline, "{view}");
    // The server saw the change it did not start.
    let events = app.get("/cluster/events").await;
    assert_eq!(events.status, 200, "{:?}", events.body);
    assert!(
        events.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["from"] == "primary1"
                && e["to"] == leader.as_str()
                && e["cause"] == "automatic"),
        "{:?}",
        events.body
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics
            .contains("pgcluster_leader_changes_total{workspace=\"default\",cause=\"automatic\"}"),
        "{metrics}"
    );
    let primary = app.get("/cluster/primary").await;
    assert_eq!(primary.status, 200, "{:?}", primary.body);
    assert_eq!(primary.body["name"], leader.as_str());
    let mut slowest = 0f64;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(app.get("/cluster/primary").await.status, 200);
        slowest = slowest.max(started.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    eprintln!("e2e /cluster/primary: slowest of 5 uncached answers {slowest:.2}s");

    // A re-run keeps the new leader and changes nothing.
    let version = installed_postgresql();
    let rerun = t
        .step(
            "run after the failover",
            app.post(
                "/ansible/run",
                json!({"output": true, "postgresql_version": version}),
            ),
        )
        .await;
    let output = rerun.body["output"].as_str().unwrap();
    let changed = recap_changed(output);
    assert!(
        changed.iter().all(|(_, c)| *c == 0),
        "the run after the failover changed something: {changed:?}\n{output}"
    );
    let view = app.get("/cluster").await.body;
    assert_eq!(view["leader"], leader.as_str(), "{view}");

    // Switchovers through the API. In synchronous mode only the synchronous
    // standby may take over: another candidate is refused, nothing runs.
    let members = view["members"].as_array().unwrap().clone();
    let role_of = |role: &str| -> Vec<String> {
        members
            .iter()
            .filter(|m| m["role"] == role)
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    let sync = role_of("sync_standby");
    assert_eq!(sync.len(), 1, "{view}");
    let other = role_of("replica");
    let refused = app
        .post("/cluster/switchover", json!({"candidate": other[0]}))
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("synchronous standby"),
        "{:?}",
        refused.body
    );
    // A writer trying every member's socket every 50 ms measures the longest
    // gap between successful writes, beside the job's own figure.
    let stop = Arc::new(AtomicBool::new(false));
    let gap_writer = {
        let stop = stop.clone();
        let addresses: Vec<String> = members
            .iter()
            .filter_map(|m| m["address"].as_str().map(String::from))
            .collect();
        std::thread::spawn(move || {
            let (mut last, mut gap) = (Instant::now(), 0f64);
            while !stop.load(Ordering::Relaxed) {
                let tried = Instant::now();
                if addresses
                    .iter()
                    .any(|a| local_psql(a, "insert into ha_probe values ('switchover')", 2).0)
                {
                    gap = gap.max(tried.duration_since(last).as_secs_f64());
                    last = tried;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            gap
        })
    };
    let switched = t
        .step(
            "switchover",
            app.post("/cluster/switchover", json!({"candidate": sync[0]})),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let written_gap = gap_writer.join().unwrap();
    t.0.push(("switchover: longest gap between writes".into(), written_gap));
    eprintln!("e2e switchover: longest gap between successful writes {written_gap:.1}s");
    let result = &switched.body;
    assert_eq!(result["old_leader"], leader.as_str(), "{:?}", switched.body);
    assert_eq!(
        result["new_leader"],
        sync[0].as_str(),
        "{:?}",
        switched.body
    );
    let gap = result["write_unavailable_seconds"].as_f64().unwrap();
    t.0.push(("switchover write unavailability".into(), gap));
    eprintln!("e2e switchover: writes unavailable {gap:.1}s");
    let view = app.get("/cluster").await.body;
    assert_eq!(view["leader"], sync[0].as_str(), "{view}");
    let primary = app.get("/cluster/primary").await;
    assert_eq!(primary.body["name"], sync[0].as_str(), "{:?}", primary.body);

    // A replica re-cloned, another restarted, through the API.
    let replicas: Vec<String> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "replica")
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert!(replicas.len() >= 2, "{view}");
    let reinit = t
        .step(
            "reinit a replica",
            app.post("/cluster/reinit", json!({"member": replicas[0]})),
        )
        .await;
    assert_eq!(
        reinit.body["member"],
        replicas[0].as_str(),
        "{:?}",
        reinit.body
    );
    let restart = t
        .step(
            "restart a replica",
            app.post(
                "/cluster/restart",
                json!({"member": replicas[1], "pending_only": false}),
            ),
        )
        .await;
    assert_eq!(
        restart.body["restarted"],
        json!([replicas[1]]),
        "{:?}",
        restart.body
    );
    let mut view = serde_json::Value::Null;
    for _ in 0..30 {
        view = app.get("/cluster").await.body;
        if view["healthy"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(view["healthy"], true, "{view}");
}
