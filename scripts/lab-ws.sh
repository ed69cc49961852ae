#!/usr/bin/env bash
# Writes files like the ones the API generates for a configure/run (hosts.ini, ssh_config,
# ansible.cfg, postgresql.yml) from a stack's `terraform output -json`, to drive
# ansible/site.yml by hand against a lab (or any stack with the same outputs).
#
#   scripts/lab-ws.sh STACK_DIR WS_DIR BASTION_PRIVATE_KEY DB_PRIVATE_KEY [SETTINGS_YAML]
#
# SETTINGS_YAML is the body of `postgresql_settings:` (indented lines such as
# `  max_connections: !unsafe "77"`); empty by default.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 STACK_DIR WS_DIR BASTION_KEY DB_KEY [SETTINGS_YAML]" >&2; exit 2; }
stack="$1" ws="$2" bastion_key="$3" db_key="$4" settings="${5:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tf="${TERRAFORM_BINARY:-terraform}"
mkdir -p "$ws/cp" "$ws/tmp" "$ws/home"
ws="$(cd "$ws" && pwd)"
"$tf" -chdir="$stack" output -json >"$ws/outputs.json"
python3 - "$ws" "$root/ansible" "$bastion_key" "$db_key" "$settings" <<'PY'
import json, sys
ws, ansible_dir, bastion_key, db_key, settings = sys.argv[1:]
out = {k: v["value"] for k, v in json.load(open(f"{ws}/outputs.json")).items()}
user = out.get("ssh_user", "ubuntu")
bastion, primary, replicas = out["bastion_eip_address"], out["primary_db_addr"], out["replica_db_addresses"]
names = [f"replica{i + 1}" for i in range(len(replicas))]
private = f" private_address={out['bastion_private_address']}" if "bastion_private_address" in out else ""
hosts = ["[bastion]", f"bastion1 ansible_host={bastion}{private}", "", "[primary]", f"primary1 ansible_host={primary}", "", "[replicas]"]
hosts += [f"{n} ansible_host={ip}" for n, ip in zip(names, replicas)]
hosts += ["", "[db:children]", "primary", "replicas", "", "[all:vars]", f"ansible_user={user}", ""]
open(f"{ws}/hosts.ini", "w").write("\n".join(hosts))
cfg = [f"Host bastion bastion1 {bastion}", f"  HostName {bastion}", f"  User {user}", f"  IdentityFile {bastion_key}", ""]
for n, ip in [("primary primary1", primary)] + list(zip(names, replicas)):
    cfg += [f"Host {n} {ip}", f"  HostName {ip}", f"  User {user}", f"  IdentityFile {db_key}", "  ProxyJump bastion"]
cfg += ["Host *", "  IdentitiesOnly yes", "  BatchMode yes", f"  UserKnownHostsFile {ws}/known_hosts",
        "  StrictHostKeyChecking accept-new", "  ConnectTimeout 20", "  ControlMaster auto", "  ControlPersist 60s",
        f"  ControlPath {ws}/cp/%C", ""]
open(f"{ws}/ssh_config", "w").write("\n".join(cfg))
open(f"{ws}/ansible.cfg", "w").write(f"""[defaults]
inventory = {ws}/hosts.ini
roles_path = {ansible_dir}/roles
host_key_checking = True
retry_files_enabled = False
interpreter_python = auto_silent
local_tmp = {ws}/tmp
forks = 10
timeout = 30
nocolor = True

[ssh_connection]
ssh_args = -F {ws}/ssh_config
pipelining = True
""")
def q(v):
    return '!unsafe "' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
lines = ["postgresql_settings:" + ("" if settings.strip() else " {}")]
if settings.strip():
    lines.append(settings.rstrip("\n"))
lines += [f"{k}: {q(v)}" for k, v in sorted(out.get("ansible_vars", {}).items())]
open(f"{ws}/postgresql.yml", "w").write("\n".join(lines) + "\n")
PY
echo "wrote $ws/{hosts.ini,ssh_config,ansible.cfg,postgresql.yml}"
echo "run: cd $root/ansible && ANSIBLE_CONFIG=$ws/ansible.cfg ANSIBLE_HOME=$ws/home ansible-playbook site.yml --vault-password-file PASSFILE -e @$ws/postgresql.yml -e @VAULT_FILE -e '{\"postgresql_version\": 15}'"
