#!/usr/bin/env bash
# Local Redis for hoptrace: install | start | stop | status.
# Address from HOPTRACE_REDIS_URL (default redis://127.0.0.1:6379/0). A second instance, the
# secured one, listens on the next port (HOPTRACE_REDIS_TLS_PORT) with TLS only (the server
# certificate of lib.sh's local CA: trust $STATE_DIR/tls/ca.pem) and an ACL: the default user is off,
# user hoptrace (password hoptrace-local-secret, a local test server's) may do everything. A client
# certificate, when one is given, must be the local CA's ($STATE_DIR/tls/client.pem): optional, so that
# another state folder's `services up` can still tell this twin answers. Its URL:
# rediss://hoptrace:hoptrace-local-secret@HOST:PORT/0?ssl_cert_reqs=required&ssl_ca_certs=$STATE_DIR/tls/ca.pem
# (&ssl_certfile=$STATE_DIR/tls/client.pem&ssl_keyfile=$STATE_DIR/tls/client.key to show the certificate)
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
TLS_PORT="${HOPTRACE_REDIS_TLS_PORT:-$((PORT + 1))}"
[[ "$TLS_PORT" =~ ^[0-9]{1,5}$ ]] || die "HOPTRACE_REDIS_TLS_PORT is not a port number: '$TLS_PORT'"
TLS_PIDFILE="$DIR/redis-tls.pid"
ACL_USER=hoptrace
ACL_PASSWORD=hoptrace-local-secret

is_redis() { [ "$(timeout 3 redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" = "PONG" ]; }
is_tls_redis() {
  [ "$(REDISCLI_AUTH="$ACL_PASSWORD" timeout 3 redis-cli --tls --cacert "$TLS_DIR/ca.pem" -h "$HOST" -p "$TLS_PORT" \
    --user "$ACL_USER" ping 2>/dev/null)" = "PONG" ]
}

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

# answers_tls: a Redis over TLS answers at the TLS port, whatever CA signed its certificate (another state folder's
# twin, say): without the certificate checked, a PING as the ACL user gets PONG, or an answer only Redis gives.
answers_tls() {
  local answer
  answer="$(REDISCLI_AUTH="$ACL_PASSWORD" timeout 3 redis-cli --tls --insecure -h "$HOST" -p "$TLS_PORT" --user "$ACL_USER" ping 2>&1)"
  [[ "$answer" == PONG || "$answer" == *NOAUTH* || "$answer" == *WRONGPASS* ]]
}

start_tls() {
  already_up redis-tls "Redis over TLS" "$TLS_PIDFILE" "$HOST" "$TLS_PORT" answers_tls HOPTRACE_REDIS_TLS_PORT && return 0
  tls_files "$HOST"
  mkdir -p "$DIR/tls"
  redis-server --bind "$HOST" --port 0 --tls-port "$TLS_PORT" --tls-cert-file "$TLS_DIR/server.pem" \
    --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients optional \
    --user default off --user "$ACL_USER" on ">$ACL_PASSWORD" '~*' '&*' '+@all' \
    --daemonize yes --pidfile "$TLS_PIDFILE" --logfile "$DIR/redis-tls.log" --dir "$DIR/tls" --save "" >/dev/null
  wait_for 10 is_tls_redis || die "redis over TLS did not answer within 10 s; see $DIR/redis-tls.log"
  say "redis-tls: started (pid $(cat "$TLS_PIDFILE")) at $HOST:$TLS_PORT (TLS, ACL user $ACL_USER)"
}

case "${1:-}" in
  install) install ;;
  start) start && start_tls ;;
  stop) stop_pid redis-tls "$TLS_PIDFILE" && stop_pid redis "$PIDFILE" ;;
  status) report redis "$PIDFILE" "$HOST" "$PORT" is_redis "" && report redis-tls "$TLS_PIDFILE" "$HOST" "$TLS_PORT" is_tls_redis "TLS, " ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
