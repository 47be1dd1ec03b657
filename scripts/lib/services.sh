# shellcheck shell=bash
# Sourced by scripts/test and scripts/example: installs (Debian's apt-get)
# and starts what hoist's real runs need, and remembers what this run
# installed and started, so that the caller stops only that.
#
#   need CMD                     is CMD on PATH
#   have_pkg PKG                 is the Debian package installed
#   apt_install PKG...           install, apt's chatter only when it fails
#   ensure_build_deps            git, python3, pkg-config + OpenSSL headers
#   ensure_engine                Debian's docker.io; dockerd when none answers
#   ensure_registry_package      Debian's docker-registry, its service off
#   start_registry DIR           a docker-registry on a free loopback port
#   stop_started                 stop the registry and the dockerd we started
#   svc_summary                  the "installed:" and "started:" lines
#
# Every ensure_* and apt_install returns 0 when done, 1 when it failed (and
# said why on stderr), 2 when it cannot be done here (not root, no apt-get)
# and 3 when DOCKER_HOST names an engine elsewhere that does not answer; on
# 2 and 3 the reason is in $svc_why, for the caller to print or fall back on.
# Messages are prefixed with the calling script's name (scripts/NAME).

svc_me=${svc_me:-scripts/$(basename "$0")}
svc_why=
svc_installed=()          # packages this run installed
svc_started=()            # what this run started, in words
svc_dockerd_pid=          # set when this run started dockerd
svc_dockerd_log=
svc_registry_pid=         # set by start_registry
svc_registry_addr=        # 127.0.0.1:PORT
svc_apt_updated=

svc_say() { echo "$svc_me: $*"; }
svc_err() { echo "$svc_me: $*" >&2; }
# For callers that cannot go on without it (`ensure_engine || svc_die $?`):
# prints $svc_why, then exits 2 when it cannot be done here, else 1.
svc_die() {
  [ "$1" -eq 1 ] || svc_err "$svc_why"
  [ "$1" -eq 2 ] && exit 2
  exit 1
}

need() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# The pids of the processes named $1 (no procps on a minimal Debian).
svc_pids_named() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
  done
  return 0
}
# The pids whose command line contains $1.
svc_pids_matching() {
  local p cmd
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
    case "$cmd" in *"$1"*) echo "${p#/proc/}" ;; esac
  done
}
# Alive and not a zombie.
svc_alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

apt_install() {
  if ! need apt-get; then
    svc_why="$* is missing, and there is no apt-get here to install it"
    return 2
  fi
  if [ "$(id -u)" -ne 0 ]; then
    svc_why="$* is missing, and installing it needs root (Debian: apt-get install $*)"
    return 2
  fi
  svc_say "installing $* ..."
  local out
  out=$(mktemp)
  if ! { [ -n "$svc_apt_updated" ] || apt-get update -qq; } >"$out" 2>&1 ||
    ! DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
      apt-get install -y -qq "$@" >>"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    svc_err "installing $* failed"
    return 1
  fi
  rm -f "$out"
  svc_apt_updated=1
  svc_installed+=("$@")
}

# What building and running hoist's examples and tests takes besides Rust:
# git, python3 (free ports, the tests' loopback git server) and the OpenSSL
# headers that git2's https support builds against.
ensure_build_deps() {
  need git || apt_install git || return
  need python3 || apt_install python3 || return
  pkg-config --exists openssl 2>/dev/null || apt_install pkg-config libssl-dev || return
}

svc_engine_up() { timeout 10 /usr/bin/docker version >/dev/null 2>&1; }

# A Docker engine that answers Debian's CLI at /usr/bin/docker (20.10, the
# API 1.41 hoist's tests are written against; a /usr/local/bin/docker may
# shadow it in PATH): the one at DOCKER_HOST, else the local socket, where
# dockerd is started when nothing answers. When this run started it,
# $svc_dockerd_pid is its pid, for stop_started.
ensure_engine() {
  # (dockerd is in /usr/sbin, often not in a user's PATH.)
  if ! { [ -x /usr/bin/docker ] && { need dockerd || [ -x /usr/sbin/dockerd ]; }; }; then
    apt_install docker.io || return
    # Where an init system runs services, the package starts its own.
    if svc_engine_up; then
      svc_started+=("dockerd (docker.io's service, started by its install; it stays)")
      return 0
    fi
  fi
  svc_engine_up && return 0
  case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
    unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
    *)
      svc_why="the engine at DOCKER_HOST=$DOCKER_HOST does not answer, and one elsewhere is not this script's to start; unset DOCKER_HOST for a local dockerd"
      return 3
      ;;
  esac
  local pids started=$SECONDS
  pids=$(svc_pids_named dockerd)
  pids=${pids//$'\n'/ }
  if [ -n "$pids" ]; then
    # Someone else's dockerd: never a second one.
    if [ "$(id -u)" -ne 0 ] && [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
      svc_why="dockerd runs (pid $pids), but $(id -un) may not use /var/run/docker.sock: only root and the docker group may"
      return 2
    fi
    svc_say "dockerd runs (pid $pids) but does not answer yet; waiting ..."
    until svc_engine_up; do
      if [ $((SECONDS - started)) -ge 60 ]; then
        svc_err "dockerd (pid $pids) did not answer within 60 s; not starting a second one"
        return 1
      fi
      sleep 0.5
    done
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    svc_why="no Docker engine answers, and starting dockerd needs root"
    return 2
  fi
  svc_dockerd_log=$(mktemp /tmp/hoist-dockerd.XXXXXX.log)
  svc_say "starting dockerd (log: $svc_dockerd_log) ..."
  # Its own session (a Ctrl-C of the caller does not reach it), and none
  # of the caller's descriptors past stderr: a dockerd that outlives
  # scripts/test would hold them, pipes that then never close and locks
  # never released (`flock LOCK scripts/test` stayed locked until it quit).
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec setsid "$(command -v dockerd || echo /usr/sbin/dockerd)"
  ) </dev/null >"$svc_dockerd_log" 2>&1 &
  local pid=$!
  until svc_engine_up; do
    if ! svc_alive "$pid" || [ $((SECONDS - started)) -ge 60 ]; then
      local why="exited"
      svc_alive "$pid" && why="did not answer within 60 s"
      svc_err "dockerd $why; the end of its log ($svc_dockerd_log):"
      tail -n 30 "$svc_dockerd_log" >&2
      # Half-started is not left behind.
      svc_alive "$pid" && svc_stop_pid "$pid" dockerd
      return 1
    fi
    sleep 0.2
  done
  # setsid forks when it leads a process group (a caller with job
  # control); dockerd's pid file names the daemon itself.
  svc_dockerd_pid=$(cat /var/run/docker.pid 2>/dev/null || echo "$pid")
  svc_started+=("dockerd (pid $svc_dockerd_pid, log $svc_dockerd_log)")
  svc_say "dockerd answers (pid $svc_dockerd_pid, after $((SECONDS - started)) s)"
}

# Debian's docker-registry (distribution 2.8), whose own service is stopped
# and disabled when this run installs it: the callers start registries of
# their own on free ports, and the service would only hold port 5000.
ensure_registry_package() {
  [ -x /usr/bin/docker-registry ] && return 0
  apt_install docker-registry || return
  if [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  elif [ -n "$(svc_pids_matching 'docker-registry serve /etc/docker/registry/')" ]; then
    service docker-registry stop >/dev/null 2>&1 || true
  fi
  if [ -n "$(svc_pids_matching 'docker-registry serve /etc/docker/registry/')" ]; then
    svc_err "warning: the docker-registry package's own service is still running"
  fi
}

# svc_wait_v2 PORT PID: until the registry answers /v2/ (up to 10 s), or
# exits (the port was taken since it was found free).
svc_wait_v2() {
  python3 - "$@" <<'EOF'
import sys, time, urllib.request
port, pid = sys.argv[1], sys.argv[2]
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
        sys.exit(0)
    except Exception:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    sys.exit(1)
        except OSError:
            sys.exit(1)
        time.sleep(0.1)
sys.exit(1)
EOF
}

# start_registry DIR: a docker-registry with its storage, config and log
# in DIR, on a free loopback port; returns once it answers /v2/.
start_registry() {
  local dir=$1 port try
  mkdir -p "$dir"
  for try in 1 2 3; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
      "$dir/data" "$port" >"$dir/config.yml"
    /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    svc_registry_pid=$!
    if svc_wait_v2 "$port" "$svc_registry_pid"; then
      svc_registry_addr=127.0.0.1:$port
      svc_started+=("docker-registry on $svc_registry_addr (pid $svc_registry_pid)")
      svc_say "docker-registry answers on $svc_registry_addr (pid $svc_registry_pid)"
      return 0
    fi
    svc_alive "$svc_registry_pid" && svc_stop_pid "$svc_registry_pid" docker-registry >/dev/null
    svc_registry_pid=
    [ "$try" -lt 3 ] && continue
    svc_err "docker-registry did not start; the end of its log ($dir/log):"
    tail -n 20 "$dir/log" >&2
  done
  return 1
}

# svc_stop_pid PID NAME: SIGTERM, then up to 20 s for it to exit; SIGKILL
# past that. Prints what happened when it had to kill.
svc_stop_pid() {
  local pid=$1 name=$2 waited=0
  kill -TERM "$pid" 2>/dev/null || return 0
  while svc_alive "$pid"; do
    if [ "$waited" -ge 100 ]; then
      svc_err "$name (pid $pid) still runs 20 s after SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
}

# Stops what this run started, and only that: its registry, and dockerd
# when this run started it (and then removes its log). One line says what.
stop_started() {
  local stopped=()
  if [ -n "$svc_registry_pid" ]; then
    svc_stop_pid "$svc_registry_pid" docker-registry
    stopped+=("docker-registry on $svc_registry_addr")
    svc_registry_pid=
  fi
  if [ -n "$svc_dockerd_pid" ]; then
    svc_stop_pid "$svc_dockerd_pid" dockerd
    stopped+=("dockerd (pid $svc_dockerd_pid)")
    rm -f "$svc_dockerd_log"
    svc_dockerd_pid=
  fi
  [ ${#stopped[@]} -eq 0 ] || svc_say "stopped: $(svc_join "${stopped[@]}")"
}

svc_join() {
  local out=$1 x
  shift
  for x in "$@"; do out+=", $x"; done
  echo "$out"
}

svc_summary() {
  svc_say "installed: ${svc_installed[*]:-nothing (all there)}"
  if [ ${#svc_started[@]} -eq 0 ]; then
    svc_say "started: nothing"
  else
    svc_say "started: $(svc_join "${svc_started[@]}")"
  fi
}
