#!/usr/bin/env bash
# Local observability stack for hoptrace, without Docker: install | start | stop | status.
#   - OpenTelemetry Collector (core + contrib components), built from Go modules by the
#     OpenTelemetry Collector Builder from deploy/collector/otelcol-builder.yaml, run with
#     deploy/collector/otelcol.yaml;
#   - Jaeger v2 (in-memory storage), built from its Go module, run with deploy/jaeger/jaeger.yaml;
#   - Prometheus from Debian's package, run by us (not as the system service) with a copy of
#     deploy/prometheus/prometheus.yml rendered into the state dir, exemplar storage on.
# Go code comes only through the Go module proxy (GOPROXY without "direct"), Prometheus through apt.
#
# State: $HOPTRACE_STATE_DIR/observability (default ./.hoptrace/observability in the current
# directory): bin/<name>-<version> (a build is skipped when its binary is there), build/ (the
# builder's generated sources and logs), *.pid, *.log, prometheus-data/.
#
# Addresses (host:port; all on loopback by default):
#   HOPTRACE_COLLECTOR_GRPC        127.0.0.1:4317   collector OTLP/gRPC receiver (apps export here)
#   HOPTRACE_COLLECTOR_HTTP        127.0.0.1:4318   collector OTLP/HTTP receiver
#   HOPTRACE_COLLECTOR_HEALTH      127.0.0.1:13133  collector health_check extension
#   HOPTRACE_COLLECTOR_PROMETHEUS  127.0.0.1:8889   collector prometheus exporter (apps' metrics, OpenMetrics)
#   HOPTRACE_COLLECTOR_TELEMETRY   127.0.0.1:8888   collector's own metrics
#   HOPTRACE_JAEGER_OTLP           127.0.0.1:14317  Jaeger OTLP/gRPC receiver (the collector sends traces here)
#   HOPTRACE_JAEGER_QUERY          127.0.0.1:16686  Jaeger query API (/api/traces) and UI
#   HOPTRACE_JAEGER_QUERY_GRPC     127.0.0.1:16685  Jaeger query gRPC API
#   HOPTRACE_PROMETHEUS            127.0.0.1:9090   Prometheus API and UI
# Other knobs: HOPTRACE_PROMETHEUS_SCRAPE_INTERVAL (2s), HOPTRACE_PROMETHEUS_RETENTION (1d),
# HOPTRACE_SPANMETRICS_FLUSH_INTERVAL (5s), HOPTRACE_COLLECTOR_DEBUG_VERBOSITY (basic),
# HOPTRACE_COLLECTOR_LOG_LEVEL, HOPTRACE_JAEGER_LOG_LEVEL (info), HOPTRACE_OBSERVABILITY_START_TIMEOUT (60 s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR="$(realpath -m "$STATE_DIR/observability")"
BIN="$DIR/bin"
DEPLOY="$(cd "$HERE/.." && pwd)"
MANIFEST="$DEPLOY/collector/otelcol-builder.yaml"
COLLECTOR_CONFIG="$DEPLOY/collector/otelcol.yaml"
JAEGER_CONFIG="$DEPLOY/jaeger/jaeger.yaml"
PROMETHEUS_TEMPLATE="$DEPLOY/prometheus/prometheus.yml"
TIMEOUT="${HOPTRACE_OBSERVABILITY_START_TIMEOUT:-60}"

# Versions. The collector's come from the builder manifest (one release: core, whose version the
# builder shares, and contrib); the binary's name carries a hash of the manifest, so editing the
# manifest rebuilds. Jaeger v2 is released inside the Go module's v1 line (v1.76.0 = v2.13.0).
CORE_VERSION="$(sed -n 's:.*go.opentelemetry.io/collector/receiver/otlpreceiver \(v[0-9.]*\).*:\1:p' "$MANIFEST")"
CONTRIB_VERSION="$(sed -n 's:.*opentelemetry-collector-contrib/exporter/prometheusexporter \(v[0-9.]*\).*:\1:p' "$MANIFEST")"
MANIFEST_HASH="$(sha256sum "$MANIFEST" | cut -c1-8)"
JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_MODULE_VERSION=v1.76.0
JAEGER_VERSION=v2.13.0
BUILDER="$BIN/ocb-$CORE_VERSION"
COLLECTOR="$BIN/otelcol-hoptrace-$CONTRIB_VERSION-$MANIFEST_HASH"
JAEGER="$BIN/jaeger-$JAEGER_VERSION"

# Every address, exported so the collector's and Jaeger's ${env:...} see the script's values.
export HOPTRACE_COLLECTOR_GRPC="${HOPTRACE_COLLECTOR_GRPC:-127.0.0.1:4317}"
export HOPTRACE_COLLECTOR_HTTP="${HOPTRACE_COLLECTOR_HTTP:-127.0.0.1:4318}"
export HOPTRACE_COLLECTOR_HEALTH="${HOPTRACE_COLLECTOR_HEALTH:-127.0.0.1:13133}"
export HOPTRACE_COLLECTOR_PROMETHEUS="${HOPTRACE_COLLECTOR_PROMETHEUS:-127.0.0.1:8889}"
export HOPTRACE_COLLECTOR_TELEMETRY="${HOPTRACE_COLLECTOR_TELEMETRY:-127.0.0.1:8888}"
export HOPTRACE_JAEGER_OTLP="${HOPTRACE_JAEGER_OTLP:-127.0.0.1:14317}"
export HOPTRACE_JAEGER_QUERY="${HOPTRACE_JAEGER_QUERY:-127.0.0.1:16686}"
export HOPTRACE_JAEGER_QUERY_GRPC="${HOPTRACE_JAEGER_QUERY_GRPC:-127.0.0.1:16685}"
export HOPTRACE_PROMETHEUS="${HOPTRACE_PROMETHEUS:-127.0.0.1:9090}"
export HOPTRACE_PROMETHEUS_SCRAPE_INTERVAL="${HOPTRACE_PROMETHEUS_SCRAPE_INTERVAL:-2s}"
# The collector's telemetry reader takes host and port apart.
address "$HOPTRACE_COLLECTOR_TELEMETRY" HOPTRACE_COLLECTOR_TELEMETRY_HOST HOPTRACE_COLLECTOR_TELEMETRY_PORT
export HOPTRACE_COLLECTOR_TELEMETRY_HOST HOPTRACE_COLLECTOR_TELEMETRY_PORT

address "$HOPTRACE_COLLECTOR_HEALTH" C_HOST C_PORT
address "$HOPTRACE_JAEGER_QUERY" J_HOST J_PORT
address "$HOPTRACE_PROMETHEUS" P_HOST P_PORT

fetch() { curl -fsS -m 3 "$@" 2>/dev/null; }
is_collector() { fetch "http://$HOPTRACE_COLLECTOR_HEALTH/" | grep -q 'Server available'; }
is_jaeger() { fetch "http://$HOPTRACE_JAEGER_QUERY/api/services" | grep -q '"data"'; }
is_prometheus() { fetch "http://$HOPTRACE_PROMETHEUS/-/ready" >/dev/null; }
# A Prometheus that scrapes hoptrace's collector (ours, or one started from the same template).
is_our_prometheus() { is_prometheus && fetch "http://$HOPTRACE_PROMETHEUS/api/v1/status/config" | grep -q 'otelcol-hoptrace'; }

# free_ports NAME VARIABLE...: dies when an address the service is about to bind is taken.
free_ports() {
  local name="$1" variable host port; shift
  for variable in "$@"; do
    address "${!variable}" host port
    port_open "$host" "$port" && die "$name: ${!variable} is taken by another program; stop it or set $variable to a free address"
  done
  return 0
}

# go_env: Go fetches modules only through a module proxy, never straight from a repository.
go_env() {
  command -v go >/dev/null || die "go is not installed; the collector and Jaeger are built from Go modules (Go 1.25 or newer)"
  local proxy
  proxy="$(go env GOPROXY | tr '|' ',' | tr ',' '\n' | grep -vx -e direct -e off | paste -sd, -)"
  [ -n "$proxy" ] || die "GOPROXY ($(go env GOPROXY)) names no module proxy; set GOPROXY to one (e.g. the default proxy.golang.org)"
  export GOPROXY="$proxy" GOFLAGS="${GOFLAGS:-} -buildvcs=false"
  mkdir -p "$BIN" "$DIR/build/tmp"
  export TMPDIR="$DIR/build/tmp"
}

build_collector() {
  [ -x "$COLLECTOR" ] && return 0
  go_env
  local t0=$SECONDS log="$DIR/build/otelcol-build.log"
  if [ ! -x "$BUILDER" ]; then
    say "observability: installing the OpenTelemetry Collector Builder $CORE_VERSION (go.opentelemetry.io/collector/cmd/builder)"
    GOBIN="$DIR/build/gobin" nice -n 10 go install "go.opentelemetry.io/collector/cmd/builder@$CORE_VERSION" >"$DIR/build/ocb-install.log" 2>&1 \
      || die "go install of the collector builder $CORE_VERSION failed; see $DIR/build/ocb-install.log"
    mv "$DIR/build/gobin/builder" "$BUILDER"
  fi
  say "observability: building otelcol-hoptrace (collector $CORE_VERSION, contrib $CONTRIB_VERSION) from $MANIFEST; this takes minutes"
  rm -rf "$DIR/build/otelcol-hoptrace"
  # The manifest's relative output_path puts the generated sources under build/.
  (cd "$DIR/build" && nice -n 10 "$BUILDER" --config "$MANIFEST" >"$log" 2>&1) \
    || die "building the collector failed; see $log"
  mv "$DIR/build/otelcol-hoptrace/otelcol-hoptrace" "$COLLECTOR"
  say "observability: built $COLLECTOR in $((SECONDS - t0)) s"
}

build_jaeger() {
  [ -x "$JAEGER" ] && return 0
  go_env
  local t0=$SECONDS log="$DIR/build/jaeger-build.log" src
  say "observability: building Jaeger $JAEGER_VERSION ($JAEGER_MODULE $JAEGER_MODULE_VERSION, cmd/jaeger); this takes minutes"
  # Built inside the released module itself, so its go.mod/go.sum (and replace directives) pin
  # every dependency exactly as Jaeger released it; `go install pkg@version` refuses replaces.
  src="$(go mod download -json "$JAEGER_MODULE@$JAEGER_MODULE_VERSION" 2>"$log" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [ -d "$src" ] || die "could not download $JAEGER_MODULE@$JAEGER_MODULE_VERSION through $GOPROXY; see $log"
  (cd "$src" && nice -n 10 go build -mod=readonly -trimpath -o "$JAEGER.partial" \
    -ldflags "-s -w -X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_VERSION" ./cmd/jaeger >>"$log" 2>&1) \
    || die "building Jaeger failed; see $log"
  mv "$JAEGER.partial" "$JAEGER"
  say "observability: built $JAEGER in $((SECONDS - t0)) s"
}

install_prometheus() {
  command -v prometheus >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "prometheus is not installed; install it (Debian: apt-get install --no-install-recommends prometheus) or run this as root"
  say "observability: installing the Debian package prometheus (the system service stays off)"
  # Debian starts a package's service on install unless /usr/sbin/policy-rc.d says no (exit 101):
  # put one there for the install when the machine has none, so nothing grabs port 9090.
  # --no-install-recommends leaves out prometheus-node-exporter (another service, port 9100).
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  local rc=0
  (apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }) || rc=$?
  [ -n "$made_policy" ] && rm -f "$policy"
  [ "$rc" = 0 ] || die "apt-get could not install prometheus"
  # Nor at boot: where systemd runs, the Debian unit would take 9090 with its own config.
  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus.service >/dev/null 2>&1 || true; fi
  return 0
}

install() {
  build_collector
  build_jaeger
  install_prometheus
}

# launch PIDFILE LOG COMMAND...: start a service in its own session (it outlives this shell).
launch() {
  local pidfile="$1" log="$2"; shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# await NAME PIDFILE LOG PROBE: wait until PROBE passes; die with the log's path if it does not.
await() {
  local name="$1" pidfile="$2" log="$3" probe="$4"
  if ! wait_for "$TIMEOUT" "$probe"; then
    alive "$pidfile" || die "$name exited during start-up; see $log"
    die "$name did not answer within $TIMEOUT s; see $log"
  fi
}

start_jaeger() {
  local pidfile="$DIR/jaeger.pid" log="$DIR/jaeger.log"
  already_up jaeger Jaeger "$pidfile" "$J_HOST" "$J_PORT" is_jaeger HOPTRACE_JAEGER_QUERY && return 0
  free_ports jaeger HOPTRACE_JAEGER_OTLP HOPTRACE_JAEGER_QUERY_GRPC
  launch "$pidfile" "$log" "$JAEGER" --config "$JAEGER_CONFIG"
  await jaeger "$pidfile" "$log" is_jaeger
  say "jaeger: started Jaeger $JAEGER_VERSION (pid $(cat "$pidfile")); query API and UI at http://$HOPTRACE_JAEGER_QUERY, OTLP at $HOPTRACE_JAEGER_OTLP"
}

start_collector() {
  local pidfile="$DIR/collector.pid" log="$DIR/collector.log"
  already_up collector "OpenTelemetry Collector" "$pidfile" "$C_HOST" "$C_PORT" is_collector HOPTRACE_COLLECTOR_HEALTH && return 0
  free_ports collector HOPTRACE_COLLECTOR_GRPC HOPTRACE_COLLECTOR_HTTP HOPTRACE_COLLECTOR_PROMETHEUS HOPTRACE_COLLECTOR_TELEMETRY
  launch "$pidfile" "$log" "$COLLECTOR" --config "$COLLECTOR_CONFIG"
  await collector "$pidfile" "$log" is_collector
  say "collector: started otelcol-hoptrace $CONTRIB_VERSION (pid $(cat "$pidfile")); OTLP at $HOPTRACE_COLLECTOR_GRPC (gRPC) and $HOPTRACE_COLLECTOR_HTTP (HTTP)"
}

start_prometheus() {
  local pidfile="$DIR/prometheus.pid" log="$DIR/prometheus.log"
  if ! alive "$pidfile" && is_prometheus && ! is_our_prometheus; then
    die "port $P_PORT on $P_HOST is taken by a Prometheus that does not scrape hoptrace's collector (the Debian service? systemctl disable --now prometheus); stop it or set HOPTRACE_PROMETHEUS to a free address"
  fi
  already_up prometheus Prometheus "$pidfile" "$P_HOST" "$P_PORT" is_our_prometheus HOPTRACE_PROMETHEUS && return 0
  # Prometheus does not expand ${env:NAME:-default} itself: render the template with our values.
  perl -pe 's/\$\{env:(\w+)(?::-([^}]*))?\}/exists $ENV{$1} ? $ENV{$1} : $2/ge' "$PROMETHEUS_TEMPLATE" >"$DIR/prometheus.yml"
  launch "$pidfile" "$log" prometheus --config.file="$DIR/prometheus.yml" \
    --storage.tsdb.path="$DIR/prometheus-data" --storage.tsdb.retention.time="${HOPTRACE_PROMETHEUS_RETENTION:-1d}" \
    --web.listen-address="$HOPTRACE_PROMETHEUS" --enable-feature=exemplar-storage
  await prometheus "$pidfile" "$log" is_prometheus
  say "prometheus: started Prometheus $(prometheus_version) (pid $(cat "$pidfile")) at http://$HOPTRACE_PROMETHEUS, scraping every $HOPTRACE_PROMETHEUS_SCRAPE_INTERVAL"
}

prometheus_version() { prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p'; }

start() {
  command -v curl >/dev/null || die "curl is not installed (Debian: apt-get install curl); the start-up checks need it"
  mkdir -p "$DIR"
  install
  start_jaeger
  start_collector
  start_prometheus
}

stop() {
  stop_pid prometheus "$DIR/prometheus.pid"
  stop_pid collector "$DIR/collector.pid"
  stop_pid jaeger "$DIR/jaeger.pid"
}

status() {
  local rc=0
  report jaeger "$DIR/jaeger.pid" "$J_HOST" "$J_PORT" is_jaeger "Jaeger $JAEGER_VERSION, " || rc=1
  report collector "$DIR/collector.pid" "$C_HOST" "$C_PORT" is_collector "otelcol-hoptrace $CONTRIB_VERSION, " || rc=1
  report prometheus "$DIR/prometheus.pid" "$P_HOST" "$P_PORT" is_our_prometheus "Prometheus, " || rc=1
  return $rc
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
