#!/usr/bin/env bash
# Starts pgcluster-api on this machine: installs terraform and ansible-core
# into .tools/ when they are not on PATH, builds the server, and runs it with
# the configuration from .env and the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "serve: cargo is needed to build the server (https://rustup.rs)" >&2
  exit 1
fi
# Exports TERRAFORM_BINARY, ANSIBLE_PLAYBOOK_BINARY and TF_CLI_CONFIG_FILE
# unless .env or the environment already name the binaries (and skips the
# tools only the tests use).
TOOLS_SERVE_ONLY=1
. scripts/tools.sh
echo "serve: building the server (the first build takes a few minutes)" >&2
cargo build --release --locked
exec target/release/pgcluster-api
