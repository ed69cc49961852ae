#!/usr/bin/env bash
# Benchmarks the release server binary against baselines measured in the same
# run (not part of the test suite). Writes bench/results/latest.md and .json.
#
#   scripts/bench.sh                  every figure; records the results
#   scripts/bench.sh latency load     only these sections; prints their raw
#                                     figures as JSON, records nothing
#   scripts/bench.sh realistic        the realistic load profile alone (about
#                                     2.5 minutes; BENCH_LOAD_ROUNDS=3 for less)
#
# Sections: overhead realistic load memory latency startup scaling.
# `realistic` is the API under 4 jobs printing 1 MB/s each (target: p99 within
# 1.5x of idle); `load` the same under 4 x 10 MB/s, a degradation check (every
# line stored, peak RSS, p99; no target). Whenever either runs, the two are
# printed side by side at the end (standard error).
# BENCH_SERVER=path runs another server binary (to compare two builds).
# Needs: cargo, python3, and root (or wrk already installed) for
# `apt-get install wrk`. The real terraform / ansible-playbook come from
# scripts/tools.sh. Takes about 11 minutes on 2 cores; loopback only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else
    sudo apt-get install -y wrk >/dev/null
  fi
fi

# The real tools (only for the wrapper-overhead and start-up figures).
. scripts/tools.sh
export BENCH_TERRAFORM="$TERRAFORM_BINARY" BENCH_ANSIBLE_PLAYBOOK="$ANSIBLE_PLAYBOOK_BINARY"
unset TERRAFORM_BINARY ANSIBLE_PLAYBOOK_BINARY

cargo build --release --quiet --bin pgcluster-api --example bench
exec target/release/examples/bench "$@"
