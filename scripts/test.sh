#!/usr/bin/env bash
# Installs what the tests need and runs them all:
#   - terraform (1.0.3 from PyPI when none is on PATH), the null provider
#     mirror and ansible-core, into .tools/ (scripts/tools.sh);
#   - schemathesis and openapi-spec-validator (PyPI) into .tools/schemathesis,
#     for the fuzz test and the check of the OpenAPI document;
#   - as root, the lab's system packages (openssh-server, PostgreSQL,
#     iproute2) for the end-to-end test of a replicating cluster, and
#     chromium for the test of Swagger UI (/docs) in a headless browser;
#   - then formatting, lints, the dependency audit (scripts/audit.sh) and
#     the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. scripts/tools.sh
echo "test: terraform=$TERRAFORM_BINARY ansible-playbook=$ANSIBLE_PLAYBOOK_BINARY schemathesis=$SCHEMATHESIS_BINARY"

if [ "$(id -u)" = 0 ]; then
  missing=()
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # High availability in the lab: Patroni and a 3-member etcd.
  command -v patroni >/dev/null 2>&1 || missing+=(patroni)
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
  # Backups and point-in-time recovery in the lab.
  command -v pgbackrest >/dev/null 2>&1 || missing+=(pgbackrest)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Without systemd the packages' services are not started; an init script
    # that did start one in this namespace would hold the lab's ports.
    pkill -x etcd 2>/dev/null || true
  fi
else
  echo "test: not root: the end-to-end lab test will be skipped, and the browser test too unless chromium is installed"
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
bash scripts/audit.sh
cargo test --locked --all-targets
