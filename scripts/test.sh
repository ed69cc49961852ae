#!/usr/bin/env bash
# Installs what the tests need and runs them all:
#   - terraform (1.0.3 from PyPI when none is on PATH), the null provider
#     mirror and ansible-core, into .tools/ (scripts/tools.sh);
#   - schemathesis and openapi-spec-validator (PyPI) into .tools/schemathesis,
#     for the fuzz test and the check of the OpenAPI document;
#   - as root, the lab's system packages (openssh-server, PostgreSQL,
#     iproute2, etcd, pgBackRest) for the end-to-end test of a replicating
#     cluster, Patroni from PyPI in a virtualenv of Debian's python3
#     (/opt/pgcluster-lab/patroni, versions in
#     scripts/lab-patroni-requirements.txt), and chromium for the test of
#     Swagger UI (/docs) in a headless browser;
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
  # High availability in the lab: a 3-member etcd from Debian; Patroni from
  # PyPI below (Debian 12's 3.0.2 has failover bugs, bench/notes.md).
  [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
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
  # Patroni for the lab: a virtualenv readable by postgres (not the pyenv
  # python under /root), without system site packages, so without Debian's
  # pyOpenSSL. Rebuilt only when the pinned versions change.
  patroni_venv=/opt/pgcluster-lab/patroni
  if ! cmp -s scripts/lab-patroni-requirements.txt "$patroni_venv/requirements.txt" \
      || [ ! -x "$patroni_venv/bin/patroni" ]; then
    echo "test: installing Patroni into $patroni_venv"
    rm -rf "$patroni_venv"
    install -d -m 0755 "$(dirname "$patroni_venv")"
    /usr/bin/python3 -m venv "$patroni_venv"
    "$patroni_venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
      -r scripts/lab-patroni-requirements.txt
    if "$patroni_venv/bin/python" -c 'import OpenSSL' >/dev/null 2>&1; then
      echo "test: pyOpenSSL is in $patroni_venv: Patroni could not restart a broken etcd watch" >&2
      exit 1
    fi
    install -m 0644 scripts/lab-patroni-requirements.txt "$patroni_venv/requirements.txt"
    chmod -R a+rX "$patroni_venv"
  fi
else
  echo "test: not root: the end-to-end lab test will be skipped, and the browser test too unless chromium is installed"
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
bash scripts/audit.sh
cargo test --locked --all-targets
