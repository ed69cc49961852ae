#!/usr/bin/env python3
"""Automatic failover time on a lab cluster driven by a running server.

    bench/failover.py [TTL/LOOP_WAIT/RETRY_TIMEOUT ...]   (default 20/5/5 15/5/5)

Each round sets one of the timings (PATCH /config on the leader's Patroni;
the settings alternate round by round, so each sees the same machine load),
starts a writer committing every 50 ms on the leader, then cuts the leader's
host off: `link` sets its private link down, `kill` also kills every process
of its namespace (BENCH_VARIANTS, default "link kill", one per pair of
rounds). Measured from the cut: `writable_s` until another member commits an
INSERT (every member's socket polled), `lock_s` until its Patroni log says it
took the lock, `watch_broke_s` until that log says its etcd watch broke (the
watch was on the lost host); `lost` acknowledged commits missing on it. The
host then comes back (link up; after `kill` its sshd and a playbook run, as
bench/backup.py rpo does) and the round ends once every replica streams from
the leader, with the leader written to meanwhile; `rejoin_fixes` says what it
took beyond Patroni (a playbook run, then reinit of the stragglers).
Patroni's view of the leader is polled every second: a change a round's cut
does not explain is counted as spurious.

Needs root, a lab built through the server (terraform/local), 1 leader + 2 or
more replicas, and the server: BENCH_API (http://127.0.0.1:5000), BENCH_ENV
(the lab's environment), BENCH_LAB_ROOT (/var/lib/pgcluster-lab),
BENCH_WORKSPACE (default), BENCH_TOKEN, BENCH_ROUNDS (4 per setting).
Prints one JSON object per round, one per setting, then the spurious changes.
Not part of the test
suite.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import yaml

API = os.environ.get("BENCH_API", "http://127.0.0.1:5000")
ENV = os.environ.get("BENCH_ENV", "e2e")
LAB = os.path.join(os.environ.get("BENCH_LAB_ROOT", "/var/lib/pgcluster-lab"), ENV)
WORKSPACE = os.environ.get("BENCH_WORKSPACE", "default")
PREFIX = "" if WORKSPACE == "default" else f"/workspaces/{WORKSPACE}"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
VARIANTS = os.environ.get("BENCH_VARIANTS", "link kill").split()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = max(
    (f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql")),
    key=lambda p: int(p.split("/")[4]),
)


def call(method, path, body=None, timeout=3600):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(API + PREFIX + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if os.environ.get("BENCH_TOKEN"):
        request.add_header("authorization", "Bearer " + os.environ["BENCH_TOKEN"])
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def namespace(name):
    return f"pgc-{ENV}-{'primary' if name == 'primary1' else name}"


def psql(address, sql, timeout=10):
    socket = f"{LAB}/hosts/{address}/run"
    out = subprocess.run(
        ["timeout", str(timeout), "runuser", "-u", "postgres", "--", f"{PG_BIN}/psql",
         "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", socket, "-d", "postgres", "-c", sql],
        capture_output=True, text=True, cwd="/",
    )
    return out.returncode == 0, out.stdout.strip() or out.stderr.strip()


class Patroni:
    """Patroni's REST API, reached from the bastion's namespace (its private leg)."""

    def __init__(self, members):
        self.members = members  # name -> address
        config = yaml.safe_load(open(f"{LAB}/hosts/{next(iter(members.values()))}/patroni/config.yml"))
        auth = config["restapi"]["authentication"]
        self.auth = f"{auth['username']}:{auth['password']}"
        self.etcd = str(config["etcd3"]["hosts"]).split(",")[0]  # the bastion's member

    def request(self, address, path, method="GET", body=None, timeout=3):
        argv = ["ip", "netns", "exec", f"pgc-{ENV}-bastion", "curl", "-sS", "-m", str(timeout),
                "-X", method, f"http://{address}:8008{path}"]
        if body is not None:
            argv += ["-u", self.auth, "-H", "content-type: application/json", "-d", json.dumps(body)]
        out = subprocess.run(argv, capture_output=True, text=True)
        try:
            return json.loads(out.stdout) if out.returncode == 0 else None
        except ValueError:
            return None

    def cluster(self, skip=()):
        """(leader name, timeline) from the first member that answers."""
        for name, address in self.members.items():
            if name in skip:
                continue
            view = self.request(address, "/cluster", timeout=2)
            if view:
                leaders = [m for m in view["members"] if m["role"] in ("leader", "standby_leader")]
                return (leaders[0]["name"], leaders[0].get("timeline")) if leaders else (None, None)
        return None, None


def log_seconds(address, cut_at, *needles):
    """Seconds from the cut to the first line of this member's Patroni log naming a needle."""
    try:
        lines = open(f"{LAB}/hosts/{address}/log/patroni.log").read().splitlines()
    except OSError:
        return None
    for line in lines:
        if any(n in line for n in needles):
            at = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
            if at >= cut_at - 1:
                return round(at - cut_at, 1)
    return None


def etcd_leader(patroni):
    """The member name of etcd's raft leader, asked through the bastion's etcd."""
    pki = f"{LAB}/hosts/{next(iter(patroni.members.values()))}/pki/patroni"
    argv = ["ip", "netns", "exec", f"pgc-{ENV}-bastion", "etcdctl", f"--cacert={pki}/ca.crt",
            f"--cert={pki}/member.crt", f"--key={pki}/member.key", "--command-timeout=3s",
            f"--endpoints=https://{patroni.etcd}", "-w", "json"]
    try:
        status = json.loads(subprocess.run(argv + ["endpoint", "status"], capture_output=True, text=True).stdout)
        names = json.loads(subprocess.run(argv + ["member", "list"], capture_output=True, text=True).stdout)
        leader = status[0]["Status"]["leader"]
        return next(m["name"] for m in names["members"] if m["ID"] == leader)
    except (ValueError, LookupError, StopIteration):
        return None


def lagging(members, leader, sync_mode):
    """The members not streaming from the leader (all of them without a synchronous one)."""
    others = set(members) - {leader}
    ok, rows = psql(members[leader], "SELECT application_name, sync_state FROM pg_stat_replication "
                                     "WHERE state = 'streaming'", 3)
    rows = [r.split("|") for r in rows.splitlines() if r] if ok else []
    if sync_mode and not any(r[1] == "sync" for r in rows):
        return sorted(others)
    return sorted(others - {r[0] for r in rows})


def bring_back(patroni, members, old, variant, sync_mode):
    """The cut host returns; seconds until every replica streams again, the fixes it took."""
    ns = namespace(old)
    started = time.time()
    leader = {"name": None}
    # An idle leader leaves a rewound member short of its consistent point and
    # a cloned one short of its segment: keep writing, switch WAL now and then.
    done = threading.Event()

    def tick():
        n = 0
        while not done.wait(1):
            n += 1
            switch = "; SELECT pg_switch_wal()" if n % 10 == 0 else ""
            if leader["name"]:
                psql(members[leader["name"]], f"INSERT INTO failover_probe VALUES (0, 'tick'){switch}", 5)

    ticker = threading.Thread(target=tick)
    ticker.start()
    fixes = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "dev", "priv0", "up"], check=True)
        if variant == "kill":
            subprocess.run(
                ["bash", f"{ROOT}/terraform/local/lab.sh", "sshd-up"], check=True, capture_output=True,
                env={**os.environ, "LAB_DIR": LAB, "LAB_HOST": ns.split("-")[-1], "LAB_NAMESPACE": ns,
                     "LAB_ADDRESS": members[old], "LAB_KEYS_FILE": f"{LAB}/db_authorized_keys",
                     "LAB_FORWARDING": "no", "LAB_ENV": ENV},
            )
            fixes.append(fix("playbook"))
        deadline = time.time() + 180
        while True:
            leader["name"] = patroni.cluster()[0]
            missing = lagging(members, leader["name"], sync_mode) if leader["name"] else ["?"]
            if not missing:
                break
            if time.time() > deadline:
                # What Patroni could not do alone: the playbook, then a reinit of each.
                if len(fixes) >= 3 or leader["name"] is None:
                    raise SystemExit(f"{missing} do not stream from {leader['name']}")
                fixes.append(fix("playbook") if "playbook" not in fixes else fix("reinit", missing))
                deadline = time.time() + 180
            time.sleep(2)
    finally:
        done.set()
        ticker.join()
    return round(time.time() - started, 1), fixes, leader["name"]


def fix(how, missing=()):
    """A playbook run, or a reinit of each member given, through the API."""
    if how == "playbook":
        version = int(PG_BIN.split("/")[4])
        answers = [call("POST", "/ansible/run", {"postgresql_version": version})]
    else:
        answers = [call("POST", "/cluster/reinit", {"member": m}) for m in missing]
    for status, body in answers:
        if status != 200:
            print(f"{how} failed: {json.dumps(body)[:300]}", file=sys.stderr, flush=True)
    return how


def one_round(patroni, members, number, setting, variant, sync_mode):
    leader, _ = patroni.cluster()
    ttl, loop_wait, retry_timeout = setting
    body = {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout}
    assert patroni.request(members[leader], "/config", "PATCH", body, 10) is not None, "PATCH /config"
    time.sleep(2 * loop_wait + 3)  # every member runs a loop with it, the leader renews its lease
    config = patroni.request(members[leader], "/config")
    assert all(config[k] == v for k, v in body.items()), config

    acked, stop = [], threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            if psql(members[leader], f"INSERT INTO failover_w VALUES ({number}, {i})", 2)[0]:
                acked.append(i)
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(10)
    ns = namespace(leader)
    load, raft = os.getloadavg()[0], etcd_leader(patroni)
    subprocess.run(["ip", "-n", ns, "link", "set", "dev", "priv0", "down"], check=True)
    if variant == "kill":
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        subprocess.run(["kill", "-9", *pids], capture_output=True)
    cut_at = time.time()
    stop.set()

    found = {}

    def probe(name):
        while not found and time.time() - cut_at < 120:
            if psql(members[name], f"INSERT INTO failover_probe VALUES ({number}, '{name}')", 3)[0]:
                found.setdefault(name, time.time() - cut_at)
                return
            time.sleep(0.2)

    probes = [threading.Thread(target=probe, args=(n,)) for n in members if n != leader]
    for p in probes:
        p.start()
    for p in probes + [thread]:
        p.join()
    assert found, f"no member took writes within 120 s of cutting {leader} off"
    new, took = min(found.items(), key=lambda kv: kv[1])
    ids = ",".join(map(str, acked)) or "0"
    _, kept = psql(members[new], f"SELECT count(*) FROM failover_w WHERE round = {number} "
                                 f"AND id IN ({ids})")
    rejoin, fixes, final = bring_back(patroni, members, leader, variant, sync_mode)
    # The commit that made the new leader count as writable, still there in the end?
    _, probe_kept = psql(members[final], f"SELECT count(*) > 0 FROM failover_probe WHERE round = {number}")
    return {
        "section": "round", "round": number, "setting": "/".join(map(str, setting)),
        "variant": variant, "old": leader, "new": new,
        # etcd runs on the bastion and the first two database hosts
        "etcd_on_cut_host": leader in ("primary1", "replica1"), "etcd_leader": raft,
        "writable_s": round(took, 1),
        "lock_s": log_seconds(members[new], cut_at, "acquiring session lock", "acquired session lock"),
        "watch_broke_s": log_seconds(members[new], cut_at, "watchprefix failed"),
        "acked": len(acked), "lost": len(acked) - int(kept), "load1": round(load, 2),
        "rejoin_s": rejoin, "rejoin_fixes": fixes, "leader_after": final,
        "probe_kept": probe_kept == "t", "_window": (cut_at, time.time()),
    }


def main():
    settings = [tuple(int(x) for x in s.split("/")) for s in (sys.argv[1:] or ["20/5/5", "15/5/5"])]
    status, view = call("GET", "/cluster")
    assert status == 200 and view["healthy"], view
    members = {m["name"]: m["address"] for m in view["members"]}
    patroni = Patroni(members)
    leader, timeline = patroni.cluster()
    start_config = patroni.request(members[leader], "/config")
    sync_mode = bool(start_config.get("synchronous_mode"))
    psql(members[leader], "DROP TABLE IF EXISTS failover_w, failover_probe; "
                          "CREATE TABLE failover_w (round int, id int); "
                          "CREATE TABLE failover_probe (round int, member text)")

    # Patroni's leader, every second, from any member that answers.
    changes, done = [], threading.Event()

    def watch():
        last = leader
        while not done.is_set():
            now, _ = patroni.cluster()
            if now and now != last:
                changes.append((time.time(), last, now))
                last = now
            time.sleep(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    results = []
    try:
        for r in range(ROUNDS):
            order = settings if r % 2 == 0 else settings[::-1]
            for setting in order:
                result = one_round(patroni, members, len(results) + 1, setting,
                                   VARIANTS[r % len(VARIANTS)], sync_mode)
                results.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "_window"}), flush=True)
    finally:
        done.set()
        watcher.join()
        keep = {k: start_config[k] for k in ("ttl", "loop_wait", "retry_timeout")}
        now, _ = patroni.cluster()
        if now:
            patroni.request(members[now], "/config", "PATCH", keep, 10)

    # A round's cut explains one change inside its window; any other is spurious.
    spurious = []
    for at, old, new in changes:
        inside = [r for r in results if r["_window"][0] - 1 <= at <= r["_window"][1]]
        if inside and not inside[0].get("_seen"):
            inside[0]["_seen"] = True
        else:
            spurious.append({"at": time.strftime("%H:%M:%S", time.localtime(at)), "from": old, "to": new})
    _, last_timeline = patroni.cluster()
    for setting in settings:
        name = "/".join(map(str, setting))
        mine = [r for r in results if r["setting"] == name]
        times = [r["writable_s"] for r in mine]
        print(json.dumps({
            "section": "setting", "setting": name, "synchronous_mode": sync_mode, "rounds": len(mine),
            "writable_s": times, "median_s": statistics.median(times), "max_s": max(times),
            "over_30s": sum(t > 30 for t in times),
            "lock_s": [r["lock_s"] for r in mine], "lost": sum(r["lost"] for r in mine),
            "load1": [r["load1"] for r in mine],
        }))
    print(json.dumps({"section": "spurious", "count": len(spurious), "changes": spurious,
                      "leader_changes_seen": len(changes), "rounds": len(results),
                      "timeline": [timeline, last_timeline]}))


if __name__ == "__main__":
    main()
