# Shared helpers for the local-services scripts (sourced, not run).
# Everything they write lives under one git-ignored folder: $HOPTRACE_STATE_DIR (default .hoptrace/).

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE_DIR="${HOPTRACE_STATE_DIR:-$ROOT/.hoptrace}"

die() { echo "error: $*" >&2; exit 1; }
say() { echo "$*"; }

# host_port ADDRESS -> "HOST PORT" for host:port, redis://[user:pass@]host:port/db and the like.
host_port() {
  local rest="${1#*://}"
  rest="${rest##*@}"
  rest="${rest%%/*}"
  echo "${rest%:*} ${rest##*:}"
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# alive PIDFILE: true when the pid file names a running process.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid NAME PIDFILE: TERM the process we started, KILL it after 20 s, forget it.
stop_pid() {
  local name="$1" pidfile="$2" pid i
  if ! alive "$pidfile"; then
    rm -f "$pidfile"
    say "$name: not started by hoptrace, nothing to stop"
    return 0
  fi
  pid="$(cat "$pidfile")"
  kill "$pid"
  for i in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pidfile"
  say "$name: stopped (pid $pid)"
}

# wait_for SECONDS COMMAND...: retry COMMAND every 0.2 s until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}
