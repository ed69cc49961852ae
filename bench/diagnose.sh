#!/usr/bin/env bash
# Follow-up measurements for the targets scripts/bench.sh reports as missed
# (see bench/notes.md). Run after scripts/bench.sh (it uses its release build).
#   bench/diagnose.sh ingest   perf profile of the server taking in 4 x 10 MB/s
#   bench/diagnose.sh memory   peak RSS for 100 MiB / 1 GiB with no followers,
#                              and how many lines reached terraform.log
#   bench/diagnose.sh cost     server CPU time to take in 4 jobs x 50 MB printed
#                              as fast as possible (lower is better), and
#                              whether every line was stored and logged
#   bench/diagnose.sh sched [generate]
#                              where the load figure's tail comes from: paced
#                              GET /jobs/{id} (wrk -c4), or POST
#                              /terraform/generate (wrk -c1), in 3 s windows,
#                              the 4 x 10 MB/s jobs stopped and running in
#                              turn, under `perf sched`: each kind of thread's
#                              run time and its wait for a core at each
#                              wake-up, p50/p99/max
# SERVER=path runs another server binary (to compare two builds).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/fake" "$tmp/ansible"
printf '#!/bin/sh\nexport FAKE_DIR=%s\nexec %s "$@"\n' "$tmp/fake" "$repo/bench/fakes/terraform-stream" >"$tmp/tf"
chmod +x "$tmp/tf"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

start() {
  (cd "$tmp" && exec env HOST_ADDRESS=127.0.0.1 API_PORT="$port" TERRAFORM_BINARY="$tmp/tf" \
    ANSIBLE_PLAYBOOK_BINARY=true TERRAFORM_DIR="$repo/tests/fixtures/stack" \
    ANSIBLE_DIR="$tmp/ansible" TEMPLATE_DIR="$repo/templates" DATA_DIR="$tmp/data" \
    LOG_DIR="$tmp/logs" "$@" "${SERVER:-$repo/target/release/pgcluster-api}" >/dev/null 2>&1) &
  pid=$!
  until curl -fs "$base/health" >/dev/null; do sleep 0.05; done
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$tmp/data" "$tmp/logs" "$tmp/fake"/*; }
job() { curl -fs -X POST -H 'Content-Type: application/json' -d '{"async":true}' "$base$1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])'; }
wait_job() { until curl -fs "$base/jobs/$1" | grep -qv '"status":"\(running\|queued\)"'; do sleep 0.2; done; }
hwm() { awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$pid/status"; }

case "${1:-}" in
  ingest)
    start
    echo 300000000 >"$tmp/fake/bytes"; echo 10000000 >"$tmp/fake/rate"
    t0=$(date +%s%N)
    ids=$(for _ in 1 2 3 4; do job /terraform/output; done)
    sleep 1
    cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
    wchar() { awk '/^wchar/ {print $2}' "/proc/$pid/io"; }
    before=$(cpu); written=$(wchar)
    perf record -F 999 -g -p "$pid" -o "$tmp/perf.data" -- sleep 6 >/dev/null 2>&1
    [ -n "${KEEP_PERF:-}" ] && cp "$tmp/perf.data" "$KEEP_PERF"
    used=$(( $(cpu) - before )); written=$(( $(wchar) - written ))
    for id in $ids; do curl -fs -X POST "$base/jobs/$id/cancel" >/dev/null; done
    t1=$(date +%s%N)
    sleep 1
    lines=$(cat "$tmp"/logs/terraform.log* | grep -c '18:[0-9:.]*Z \[[A-Z]*\] ' || true)
    echo "== asked 4 x 10 MB/s; took in $((lines * 100 * 1000 / (t1 - t0))) MB/s in all (lines in terraform.log)"
    echo "== server CPU: $((used * 100 / $(getconf CLK_TCK) / 6))% of one core over 6 s; written $((written / 6000000)) MB/s (logs, WAL, checkpoints)"
    echo "== self time by part (perf, share of the server's samples)"
    perf report -i "$tmp/perf.data" --no-children --sort dso,symbol -g none 2>/dev/null |
      awk '/^ +[0-9.]+%/ {
        p = $1 + 0; line = $0
        # SQLite is linked in: its internal functions have no common prefix.
        if (line ~ /sqlite3|rusqlite|[Vv]dbe|[Bb]tree|balance_|[Pp]cache|[Pp]ager|[Ww]al[A-Z]|walIndex|insertCell|pageInsert|getPage|getAndInitPage|allocateCursor|releaseMem|[Cc]ellSize|fillInCell|dropCell|defragmentPage|pageFindSlot|[Mm]oveto|yy_reduce|RunParser|exprAnalyze|resolveExpr/) k = "SQLite (job store)"
        else if (line ~ /tool_log|fmt::|tracing|Escaping|crossbeam|write_char|write_str/) k = "formatting lines for terraform.log"
        else if (line ~ /malloc|free|realloc|memmove|memcpy|memcmp|unlink_chunk/) k = "allocation and copying (libc)"
        else if (line ~ /\[k\]/) k = "kernel (pipes, file writes, scheduling)"
        else if (line ~ /read_lines|lines::finish|from_utf8|Sink|pump|LiveLog|redact|regex|aho_corasick/) k = "runner: reading, redacting, batching lines"
        else if (line ~ /tokio/) k = "tokio (tasks, channels, timers)"
        else k = "other"
        sum[k] += p
      } END { for (k in sum) printf "%6.1f%%  %s\n", sum[k], k }' | sort -rn
    echo "== top symbols"
    perf report -i "$tmp/perf.data" --no-children --sort dso,symbol -g none 2>/dev/null |
      grep -E '^ +[0-9]' | head -15 | cut -c1-140
    stop ;;
  memory)
    for size in 104857600 1073741824; do
      start
      echo "$size" >"$tmp/fake/bytes"
      id=$(job /terraform/plan)
      wait_job "$id"
      sleep 1
      lines=$(cat "$tmp"/logs/terraform.log* | grep -c '18:[0-9:.]*Z \[[A-Z]*\] ' || true)
      echo "printed $((size / 100)) lines: peak RSS $(hwm), terraform.log has $lines of them"
      stop
    done ;;
  cost)
    start
    echo 50000000 >"$tmp/fake/bytes"
    cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
    switches() { cat /proc/"$pid"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }
    before=$(cpu); sw=$(switches); t0=$(date +%s%N)
    ids=$(for _ in 1 2 3 4; do job /terraform/output; done)
    for id in $ids; do wait_job "$id"; done
    t1=$(date +%s%N)
    used=$(( $(cpu) - before )); sw=$(( $(switches) - sw ))
    stored=0
    for id in $ids; do
      n=$(curl -fs "$base/jobs/$id/log?after=499990&limit=100" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["next_after"])')
      stored=$((stored + n))
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    logged=$(cat "$tmp"/logs/terraform.log* | grep -c '18:[0-9:.]*Z \[[A-Z]*\] ' || true)
    echo "cpu_s=$(awk "BEGIN {print $used / $(getconf CLK_TCK)}") wall_s=$(awk "BEGIN {print ($t1 - $t0) / 1e9}") switches=$sw stored_lines=$stored logged_lines=$logged (of 2000000 printed)"
    rm -rf "$tmp/data" "$tmp/logs" "$tmp/fake"/* ;;
  sched)
    start JOB_LOG_MAX_BYTES=268435456
    idle_job=$(job /terraform/output); wait_job "$idle_job"
    # The same request as scripts/bench.sh's (examples/bench.rs GENERATE_BODY).
    case "${2:-}" in
      generate) endpoint="POST /terraform/generate, wrk -c1"; connections=1; url="$base/terraform/generate"
        body='{"bastion_key_pair": "bench-bastion", "db_key_pair": "bench-db", "replica_count": "2", "environment": "bench"}' ;;
      "") endpoint="GET /jobs/{id}, wrk -c4"; connections=4; url="$base/jobs/$idle_job"; body="" ;;
      *) echo "usage: $0 sched [generate]" >&2; exit 2 ;;
    esac
    echo 2000000000 >"$tmp/fake/bytes"; echo 10000000 >"$tmp/fake/rate"
    ids=$(for _ in 1 2 3 4; do job /terraform/output; done)
    groups=""
    for id in $ids; do
      until g=$(curl -fs "$base/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"] or "")') && [ -n "$g" ]; do sleep 0.05; done
      groups="$groups $g"
    done
    sleep 1
    # Alternating windows, as in scripts/bench.sh: idle (jobs stopped), loaded.
    for state in idle loaded idle loaded idle loaded; do
      case $state in idle) sig=STOP ;; *) sig=CONT ;; esac
      for g in $groups; do kill -"$sig" -- "-$g"; done
      sleep 0.3
      perf sched record -o "$tmp/$state.data" -- env WRK_DELAY_MS=1 WRK_BODY="$body" \
        wrk -t1 -c"$connections" -d3s -s "$repo/bench/wrk/report.lua" "$url" \
        2>/dev/null | grep '^{' >>"$tmp/$state.wrk" || true
      perf sched timehist -i "$tmp/$state.data" 2>/dev/null >>"$tmp/$state.hist"
    done
    for g in $groups; do kill -CONT -- "-$g"; done
    for id in $ids; do curl -fs -X POST "$base/jobs/$id/cancel" >/dev/null; done
    python3 - "$tmp" "$endpoint" <<'PY'
import json, sys
tmp, endpoint = sys.argv[1], sys.argv[2]
def kind(name):
    if name.startswith("tokio-rt-worker"): return "request workers"
    if name.startswith("job-output"): return "job output threads"
    if name.startswith("log "): return "tool log writers"
    # The fake (a bash script, exec'd by its wrapper) and the python3 it runs;
    # this script's own shells are not counted.
    if name.startswith(("python3", "terraform-strea")): return "printing children"
    if name.startswith("wrk"): return "wrk (the client)"
    return None
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")
for state in ("idle", "loaded"):
    wrk = [json.loads(l) for l in open(f"{tmp}/{state}.wrk") if l.strip()]
    print(f"== {state}: {endpoint} pausing 1 ms, {len(wrk)} windows of 3 s")
    print("   client latency p50/p99 per window (ms): " + ", ".join(
        f"{w['p50_us'] / 1000:.2f}/{w['p99_us'] / 1000:.2f}" for w in wrk))
    delays, run = {}, {}
    for line in open(f"{tmp}/{state}.hist"):
        parts = line.split()
        if len(parts) < 6 or not parts[0][0].isdigit():
            continue
        name = " ".join(parts[2:-3])
        k = kind(name)
        if k is None:
            continue
        delays.setdefault(k, []).append(float(parts[-2]))
        run[k] = run.get(k, 0.0) + float(parts[-1])
    print(f"   {'threads':<22} {'ran (ms/s)':>10} {'wake-ups':>9} {'wait for a core p50 / p99 / max (ms)':>38}")
    for k in ("request workers", "wrk (the client)", "job output threads", "tool log writers", "printing children"):
        d = delays.get(k, [])
        if not d:
            continue
        print(f"   {k:<22} {run[k] / (3 * len(wrk)):10.1f} {len(d):9d} {pct(d, 50):12.3f} / {pct(d, 99):6.3f} / {max(d):6.3f}")
PY
    stop ;;
  *) echo "usage: $0 ingest|memory|cost|sched" >&2; exit 2 ;;
esac
