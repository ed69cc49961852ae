#!/usr/bin/env bash
# Builds and removes the pieces of a pgcluster lab: network namespaces as hosts,
# each with its own sshd. Called by the null_resources of this stack with its
# parameters in LAB_* environment variables; `lab.sh purge ENV INDEX` removes a
# lab whose Terraform state was lost.
#
# Every step tolerates being run twice or on a half-built lab: a failed create
# taints the resource and the next apply runs the destroy step first.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

die() { printf 'lab.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'lab.sh: %s\n' "$*" >&2; }

need_root() {
  [ "$(id -u)" = 0 ] || die "the local lab needs root (it creates network namespaces, links and routes, and runs sshd and PostgreSQL as other users); run terraform as root"
  local tool
  for tool in ip sshd ssh-keygen ss; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: install iproute2 and openssh-server"
  done
}

# Refuse paths that are not a lab directory of ours: rm -rf runs on them.
check_dir() {
  case "$1" in
    /*/*) ;;
    *) die "refusing to use '$1' as a lab directory" ;;
  esac
  case "$1" in
    *..* | *' '* | *'*'*) die "refusing to use '$1' as a lab directory" ;;
  esac
}

# True when this lab directory is managed from the caller's Terraform
# directory (or has no owner yet): never tear down another lab's pieces.
owned() {
  local owner_file="$LAB_DIR/.owner"
  [ ! -s "$owner_file" ] || [ "$(cat "$owner_file")" = "$LAB_OWNER" ]
}

ns_exists() { [ -e "/run/netns/$1" ]; }
link_exists() { ip link show dev "$1" >/dev/null 2>&1; }

# Deleting a namespace removes its veth peers asynchronously: tolerate a link
# that vanishes under us, but make sure it is gone in the end.
delete_link() {
  local i
  for i in $(seq 1 50); do
    link_exists "$1" || return 0
    ip link delete dev "$1" 2>/dev/null || true
    sleep 0.05
  done
  die "could not delete link $1"
}

# Stop every process of a namespace (sshd and its sessions, PostgreSQL started
# later by Ansible): postmasters get a fast shutdown, the others SIGTERM, and
# whatever is left after a grace period SIGKILL.
kill_namespace() {
  local ns="$1" pids pid comm ppid pcomm i
  ns_exists "$ns" || return 0
  pids="$(ip netns pids "$ns" 2>/dev/null || true)"
  [ -n "$pids" ] || return 0
  for pid in $pids; do
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    if [ "$comm" = postgres ]; then
      ppid="$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
      pcomm="$(cat "/proc/$ppid/comm" 2>/dev/null || true)"
      # Only the postmaster: its children follow it.
      [ "$pcomm" = postgres ] || kill -INT "$pid" 2>/dev/null || true
    else
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for i in $(seq 1 100); do
    [ -n "$(ip netns pids "$ns" 2>/dev/null || true)" ] || return 0
    sleep 0.1
  done
  pids="$(ip netns pids "$ns" 2>/dev/null || true)"
  if [ -n "$pids" ]; then
    say "killing what is left in $ns: $pids"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    for i in $(seq 1 50); do
      [ -n "$(ip netns pids "$ns" 2>/dev/null || true)" ] || return 0
      sleep 0.1
    done
    die "processes still running in namespace $ns"
  fi
}

# A host removed and added again comes back with the same address and a new
# MAC: drop the old neighbour entries for it in the lab's other namespaces, or
# they keep sending to the dead MAC (connections time out) for a while.
flush_neighbours() {
  local address="$1" ns
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^pgc-$LAB_ENV-" || true); do
    ip -n "$ns" neigh flush to "$address" >/dev/null 2>&1 || true
  done
}

delete_namespace() {
  local ns="$1"
  kill_namespace "$ns"
  if ns_exists "$ns"; then
    ip netns delete "$ns"
  fi
}

# An sshd of its own in a namespace: own config, host key, pid file, log and
# authorized keys. Without -D sshd daemonizes (fork + setsid), so it leaves
# Terraform's process group and session.
sshd_up() {
  local host="$LAB_HOST" ns="$LAB_NAMESPACE" address="$LAB_ADDRESS"
  local dir="$LAB_DIR/hosts/$address" i pid
  check_dir "$LAB_DIR"
  mkdir -p "$dir" /run/sshd
  chmod 0755 "$LAB_DIR" "$LAB_DIR/hosts" "$dir"
  # One host key per host name, kept for the life of the lab (not removed with
  # the host): a replica removed and added again answers with the same key, as
  # the clients' known_hosts expect.
  local key="$LAB_DIR/hostkeys/$host"
  mkdir -p "$LAB_DIR/hostkeys"
  chmod 0700 "$LAB_DIR/hostkeys"
  [ -s "$key" ] || ssh-keygen -q -t ed25519 -N '' -C "$host.$LAB_ENV_NAME" -f "$key"
  touch "$LAB_KEYS_FILE"
  cat >"$dir/sshd_config" <<EOF
# sshd of lab host $host (namespace $ns)
ListenAddress $address:22
HostKey $key
PidFile $dir/sshd.pid
AuthorizedKeysFile $LAB_KEYS_FILE
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding $LAB_FORWARDING
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
PrintMotd no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
EOF
  pid="$(cat "$dir/sshd.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && [ "$(ip netns identify "$pid" 2>/dev/null || true)" = "$ns" ]; then
    say "sshd of $host already running (pid $pid)"
    return 0
  fi
  /usr/sbin/sshd -t -f "$dir/sshd_config" || die "invalid sshd configuration for $host"
  # A clean environment: nothing of the caller's (the API's secrets) stays in
  # a long-lived daemon.
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    ip netns exec "$ns" /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" </dev/null >/dev/null 2>&1 ||
    die "sshd of $host did not start (see $dir/sshd.log)"
  for i in $(seq 1 100); do
    if ip netns exec "$ns" ss -Hltn "src $address and sport = :22" 2>/dev/null | grep -q .; then
      say "sshd of $host listening on $address:22 in $ns"
      return 0
    fi
    sleep 0.05
  done
  die "sshd of $host is not listening on $address:22 (see $dir/sshd.log)"
}

prefix_len() { echo "${1#*/}"; }

lab_up() {
  need_root
  check_dir "$LAB_DIR"
  local owner_file="$LAB_DIR/.owner" alias="pgcluster-lab:$LAB_ENV"
  # Checks first: a create that fails leaves the resource tainted, and
  # Terraform does not run destroy provisioners of tainted resources.
  if [ -s "$owner_file" ] && [ "$(cat "$owner_file")" != "$LAB_OWNER" ]; then
    die "a lab named '$LAB_ENV' already exists, managed from $(cat "$owner_file"); choose another environment (and network_index) or destroy that lab first"
  fi
  if link_exists "$LAB_BRIDGE"; then
    local current
    current="$(ip -o link show dev "$LAB_BRIDGE" | sed -n 's/.* alias \(.*\)$/\1/p')"
    [ "$current" = "$alias" ] ||
      die "link $LAB_BRIDGE already exists and does not belong to lab '$LAB_ENV' (alias '$current'); choose another network_index"
  fi
  if ip -4 route show "$LAB_PUBLIC_CIDR" | grep -q . && ! link_exists "$LAB_PUBLIC_LINK"; then
    die "subnet $LAB_PUBLIC_CIDR is already routed on this machine; choose another network_index or lab_cidr"
  fi
  mkdir -p "$LAB_DIR"
  chmod 0755 "$LAB_DIR"
  printf '%s\n' "$LAB_OWNER" >"$owner_file"

  # Private bridge, without an address in the root namespace, and the private
  # subnet unreachable from here: only the bastion gets in.
  if ! link_exists "$LAB_BRIDGE"; then
    ip link add "$LAB_BRIDGE" type bridge
    ip link set dev "$LAB_BRIDGE" alias "$alias"
  fi
  ip link set dev "$LAB_BRIDGE" up
  ip route replace unreachable "$LAB_PRIVATE_CIDR"

  ns_exists "$LAB_NAMESPACE" || ip netns add "$LAB_NAMESPACE"
  ip -n "$LAB_NAMESPACE" link set dev lo up

  # Public link: root namespace <-> bastion.
  if ! link_exists "$LAB_PUBLIC_LINK"; then
    ip link add "$LAB_PUBLIC_LINK" type veth peer name pub0 netns "$LAB_NAMESPACE"
    ip link set dev "$LAB_PUBLIC_LINK" alias "$alias"
  fi
  ip addr replace "$LAB_GATEWAY/$(prefix_len "$LAB_PUBLIC_CIDR")" dev "$LAB_PUBLIC_LINK"
  ip link set dev "$LAB_PUBLIC_LINK" up
  ip -n "$LAB_NAMESPACE" addr replace "$LAB_BASTION_IP/$(prefix_len "$LAB_PUBLIC_CIDR")" dev pub0
  ip -n "$LAB_NAMESPACE" link set dev pub0 up

  # Bastion's leg on the private bridge.
  if ! link_exists "$LAB_BASTION_LINK"; then
    ip link add "$LAB_BASTION_LINK" type veth peer name priv0 netns "$LAB_NAMESPACE"
    ip link set dev "$LAB_BASTION_LINK" alias "$alias"
  fi
  ip link set dev "$LAB_BASTION_LINK" master "$LAB_BRIDGE" up
  ip -n "$LAB_NAMESPACE" addr replace "$LAB_BASTION_PRIV/$(prefix_len "$LAB_PRIVATE_CIDR")" dev priv0
  ip -n "$LAB_NAMESPACE" link set dev priv0 up
  say "lab '$LAB_ENV': bastion $LAB_BASTION_IP (namespace $LAB_NAMESPACE), private subnet $LAB_PRIVATE_CIDR on $LAB_BRIDGE"
}

lab_down() {
  need_root
  check_dir "$LAB_DIR"
  if ! owned; then
    say "warning: lab '$LAB_ENV' is managed from $(cat "$LAB_DIR/.owner"), not from $LAB_OWNER: leaving it alone"
    return 0
  fi
  local ns
  # The bastion, then any host namespace of this lab left behind (lost state).
  delete_namespace "$LAB_NAMESPACE"
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^pgc-$LAB_ENV-" || true); do
    say "removing leftover namespace $ns"
    delete_namespace "$ns"
  done
  for link in "$LAB_PUBLIC_LINK" "$LAB_BASTION_LINK" "$LAB_BRIDGE"; do
    delete_link "$link"
  done
  while ip -4 route show type unreachable "$LAB_PRIVATE_CIDR" | grep -q .; do
    ip route delete unreachable "$LAB_PRIVATE_CIDR"
  done
  rm -rf -- "$LAB_DIR"
  say "lab '$LAB_ENV' removed"
}

host_up() {
  need_root
  check_dir "$LAB_DIR"
  owned || die "lab '$LAB_ENV' is managed from $(cat "$LAB_DIR/.owner"), not from $LAB_OWNER"
  local ns="$LAB_NAMESPACE"
  link_exists "$LAB_BRIDGE" || die "bridge $LAB_BRIDGE of lab '$LAB_ENV' is missing"
  ns_exists "$ns" || ip netns add "$ns"
  ip -n "$ns" link set dev lo up
  if ! link_exists "$LAB_LINK"; then
    ip link add "$LAB_LINK" type veth peer name priv0 netns "$ns"
    ip link set dev "$LAB_LINK" alias "pgcluster-lab:$LAB_ENV"
  fi
  ip link set dev "$LAB_LINK" master "$LAB_BRIDGE" up
  ip -n "$ns" addr replace "$LAB_ADDRESS/$(prefix_len "$LAB_PRIVATE_CIDR")" dev priv0
  ip -n "$ns" link set dev priv0 up
  flush_neighbours "$LAB_ADDRESS"
  sshd_up
}

host_down() {
  need_root
  check_dir "$LAB_DIR"
  [ -n "$LAB_HOST" ] || die "no host name"
  [[ "${LAB_ADDRESS:-}" =~ ^[0-9.]+$ ]] || die "no host address"
  if ! owned; then
    say "warning: lab '$LAB_ENV' is managed from $(cat "$LAB_DIR/.owner"), not from $LAB_OWNER: leaving host $LAB_HOST alone"
    return 0
  fi
  delete_namespace "$LAB_NAMESPACE"
  delete_link "$LAB_LINK"
  [ -z "${LAB_ADDRESS:-}" ] || flush_neighbours "$LAB_ADDRESS"
  # The host's sshd files and PostgreSQL data, socket and logs.
  rm -rf -- "${LAB_DIR:?}/hosts/${LAB_ADDRESS:?}"
  say "host $LAB_HOST removed"
}

write_keys() {
  need_root
  check_dir "$LAB_DIR"
  mkdir -p "$LAB_DIR"
  local tmp="$LAB_KEYS_FILE.tmp"
  printf '%s\n' "$LAB_KEY" >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$LAB_KEYS_FILE"
}

# Remove a lab without its Terraform state: lab.sh purge ENV INDEX [LAB_ROOT] [LAB_CIDR]
purge() {
  [ $# -ge 2 ] || die "usage: lab.sh purge ENVIRONMENT NETWORK_INDEX [LAB_ROOT] [LAB_CIDR]"
  local env="$1" idx="$2" root="${3:-/var/lib/pgcluster-lab}" cidr="${4:-10.231.0.0/16}" ns link base
  [[ "$env" =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "bad environment '$env'"
  [[ "$idx" =~ ^[0-9]{1,2}$ ]] || die "bad network index '$idx'"
  need_root
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^pgc-$env-" || true); do
    delete_namespace "$ns"
  done
  for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^pgc${idx}(br|pub|bas|pri|r[0-9]+)$" || true); do
    delete_link "$link"
  done
  base="${cidr%%/*}"
  base="${base%.*.*}"
  ip route delete unreachable "$base.$((2 * idx + 1)).0/24" 2>/dev/null || true
  check_dir "$root/$env"
  rm -rf -- "${root:?}/${env:?}"
  say "lab '$env' (network index $idx) purged"
}

LAB_ENV_NAME="${LAB_ENV:-lab}"
case "${1:-}" in
  lab-up) lab_up ;;
  lab-down) lab_down ;;
  keys) write_keys ;;
  sshd-up) need_root; LAB_ENV="${LAB_ENV:-$(basename "$LAB_DIR")}"; LAB_ENV_NAME="$LAB_ENV"; sshd_up ;;
  host-up) host_up ;;
  host-down) host_down ;;
  purge) shift; purge "$@" ;;
  *) die "usage: lab.sh lab-up|lab-down|keys|sshd-up|host-up|host-down|purge ENV INDEX" ;;
esac
