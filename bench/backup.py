#!/usr/bin/env python3
"""Backup and restore figures on a lab cluster driven by a running server.

    bench/backup.py ratio      API backup vs `pgbackrest backup` on the leader's
                               host, alternated, median of BENCH_PAIRS (5) pairs
                               of incremental and 2 of full backups
    bench/backup.py load       pgbench -i -s BENCH_SCALE (70: ~1 GB) on the leader
    bench/backup.py restore    full backup, then POST /restore "latest": its time
    bench/backup.py rpo        a writer commits every 50 ms; the leader's host is
                               lost (links down, its processes killed); after the
                               failover and a re-run bringing it back, a restore to
                               "latest": how many acknowledged commits it lost,
                               and how far behind the archive was at the loss

Needs root, a lab built through the server (terraform/local) and the server:
BENCH_API (http://127.0.0.1:5000), BENCH_ENV (the lab's environment),
BENCH_LAB_ROOT (/var/lib/pgcluster-lab), BENCH_WORKSPACE (default), BENCH_TOKEN.
Prints one JSON object per section. Not part of the test suite.
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

API = os.environ.get("BENCH_API", "http://127.0.0.1:5000")
ENV = os.environ.get("BENCH_ENV", "e2e")
LAB = os.path.join(os.environ.get("BENCH_LAB_ROOT", "/var/lib/pgcluster-lab"), ENV)
WORKSPACE = os.environ.get("BENCH_WORKSPACE", "default")
PREFIX = "" if WORKSPACE == "default" else f"/workspaces/{WORKSPACE}"
PAIRS = int(os.environ.get("BENCH_PAIRS", "5"))
SCALE = os.environ.get("BENCH_SCALE", "70")
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


def wait_job(job_id):
    while True:
        request = urllib.request.Request(f"{API}/jobs/{job_id}")
        if os.environ.get("BENCH_TOKEN"):
            request.add_header("authorization", "Bearer " + os.environ["BENCH_TOKEN"])
        with urllib.request.urlopen(request) as response:
            job = json.load(response)
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)


def leader():
    status, body = call("GET", "/cluster/primary")
    assert status == 200, body
    return body["name"], body["address"]


def host_of(name):
    return "primary" if name == "primary1" else name


def psql(address, sql, timeout=10):
    socket = f"{LAB}/hosts/{address}/run"
    out = subprocess.run(
        ["timeout", str(timeout), "runuser", "-u", "postgres", "--", f"{PG_BIN}/psql",
         "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", socket, "-d", "postgres", "-c", sql],
        capture_output=True, text=True, cwd="/",
    )
    return out.returncode == 0, out.stdout.strip() or out.stderr.strip()


def direct_backup(name, address, kind):
    """`pgbackrest backup` as the playbook runs it, in the host's namespace."""
    conf = f"{LAB}/hosts/{address}/pgbackrest/pgbackrest.conf"
    started = time.monotonic()
    subprocess.run(
        ["ip", "netns", "exec", f"pgc-{ENV}-{host_of(name)}", "runuser", "-u", "postgres", "--",
         "pgbackrest", f"--config={conf}", f"--stanza={ENV}", f"--type={kind}", "backup"],
        check=True, capture_output=True, cwd="/",
    )
    return time.monotonic() - started


def api_backup(kind):
    started = time.monotonic()
    status, body = call("POST", "/backups", {"type": kind})
    assert status == 200, body
    return time.monotonic() - started


def ratio():
    name, address = leader()
    figures = {}
    for kind, pairs in (("incr", PAIRS), ("full", 2)):
        api, direct = [], []
        for _ in range(pairs):
            direct.append(direct_backup(name, address, kind))
            api.append(api_backup(kind))
        figures[kind] = {
            "api_median_s": round(statistics.median(api), 2),
            "direct_median_s": round(statistics.median(direct), 2),
            "ratio": round(statistics.median(api) / statistics.median(direct), 2),
            "api_s": [round(x, 2) for x in api],
            "direct_s": [round(x, 2) for x in direct],
        }
    ok, size = psql(address, "SELECT pg_size_pretty(pg_database_size('postgres'))")
    print(json.dumps({"section": "ratio", "database": size, **figures}))


def load():
    name, address = leader()
    started = time.monotonic()
    subprocess.run(
        ["runuser", "-u", "postgres", "--", f"{PG_BIN}/pgbench", "-i", "-q", "-s", SCALE,
         "-h", f"{LAB}/hosts/{address}/run", "postgres"],
        check=True, capture_output=True, cwd="/",
    )
    ok, size = psql(address, "SELECT pg_size_pretty(pg_database_size('postgres'))")
    print(json.dumps({"section": "load", "scale": SCALE, "database": size,
                      "seconds": round(time.monotonic() - started, 1)}))


def restore():
    name, address = leader()
    ok, size = psql(address, "SELECT pg_size_pretty(pg_database_size('postgres'))")
    full = api_backup("full")
    started = time.monotonic()
    status, body = call("POST", "/restore", {"target": "latest", "confirm": WORKSPACE, "async": True})
    assert status == 202, body
    job = wait_job(body["job_id"])
    took = time.monotonic() - started
    assert job["status"] == "succeeded", job
    print(json.dumps({"section": "restore", "database": size, "full_backup_s": round(full, 1),
                      "restore_latest_s": round(took, 1), "result": job["result"]}))


def rpo():
    name, address = leader()
    psql(address, "DROP TABLE IF EXISTS rpo; CREATE TABLE rpo (id bigint PRIMARY KEY, "
                  "at timestamptz NOT NULL DEFAULT clock_timestamp())")
    acked = {"id": 0}
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            if psql(address, f"INSERT INTO rpo (id) VALUES ({i})", 2)[0]:
                acked["id"] = i
            else:
                return
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(20)
    ok, archiver = psql(address, "SELECT extract(epoch FROM now() - last_archived_time) "
                                 "FROM pg_stat_archiver")
    namespace = f"pgc-{ENV}-{host_of(name)}"
    for link in ("priv0",):
        subprocess.run(["ip", "-n", namespace, "link", "set", "dev", link, "down"], check=True)
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    subprocess.run(["kill", "-9", *pids], capture_output=True)
    lost_at = time.time()
    stop.set()
    thread.join()
    last = acked["id"]
    while True:
        status, body = call("GET", "/cluster/primary")
        if status == 200 and body["name"] != name:
            break
        time.sleep(0.5)
    failover = time.time() - lost_at
    print(json.dumps({"acknowledged": last, "failover_s": round(failover, 1)}), flush=True)
    # The host comes back: its link, then its sshd (killed with the rest);
    # a run of the playbook starts its etcd and Patroni again.
    subprocess.run(["ip", "-n", namespace, "link", "set", "dev", "priv0", "up"], check=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(
        ["bash", f"{root}/terraform/local/lab.sh", "sshd-up"], check=True, capture_output=True,
        env={**os.environ, "LAB_DIR": LAB, "LAB_HOST": host_of(name), "LAB_NAMESPACE": namespace,
             "LAB_ADDRESS": address, "LAB_KEYS_FILE": f"{LAB}/db_authorized_keys",
             "LAB_FORWARDING": "no", "LAB_ENV": ENV},
    )
    version = int(PG_BIN.split("/")[4])
    status, body = call("POST", "/ansible/run", {"postgresql_version": version})
    assert status == 200, body
    status, body = call("POST", "/restore", {"target": "latest", "confirm": WORKSPACE, "async": True})
    assert status == 202, body
    job = wait_job(body["job_id"])
    assert job["status"] == "succeeded", job
    _, new_address = leader()
    ok, kept = psql(new_address, "SELECT coalesce(max(id), 0) FROM rpo")
    kept = int(kept)
    print(json.dumps({"section": "rpo", "acknowledged": last, "after_restore": kept,
                      "lost_commits": last - kept, "lost_ms_at_50ms": (last - kept) * 50,
                      "archive_behind_at_loss_s": float(archiver) if ok and archiver else None,
                      "failover_s": round(failover, 1)}))


if __name__ == "__main__":
    sections = {"ratio": ratio, "load": load, "restore": restore, "rpo": rpo}
    for section in sys.argv[1:] or ["ratio"]:
        sections[section]()
