# Shared helpers for the local-services scripts (sourced, not run).
# Everything they write lives under one folder: $HOPTRACE_STATE_DIR (default .hoptrace/ in the
# current directory), never beside the scripts, which may be inside an installed package.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${HOPTRACE_STATE_DIR:-$PWD/.hoptrace}"

die() { echo "error: $*" >&2; exit 1; }
say() { echo "$*"; }

# address ADDRESS HOST_VAR PORT_VAR: set HOST_VAR and PORT_VAR from host:port, redis://[user:pass@]host:port/db
# and the like; dies on anything else (the values reach arithmetic and config files: text there could run a command).
# (Its locals have names no caller uses: printf -v would otherwise set them instead of the caller's.)
address() {
  local _address_rest="${1#*://}"
  _address_rest="${_address_rest##*@}"
  _address_rest="${_address_rest%%/*}"
  local _address_host="${_address_rest%:*}" _address_port="${_address_rest##*:}"
  [[ "$_address_host" =~ ^[A-Za-z0-9._-]+$ && "$_address_port" =~ ^[0-9]{1,5}$ ]] \
    || die "not a host:port address: '$1' (for example 127.0.0.1:9092, or redis://127.0.0.1:6379/0)"
  printf -v "$2" '%s' "$_address_host"
  printf -v "$3" '%s' "$_address_port"
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

# already_up NAME PRODUCT PIDFILE HOST PORT PROBE VARIABLE: true (saying why) when the service
# runs already, started by us or answering at the address; dies when something else holds the port.
already_up() {
  local name="$1" product="$2" pidfile="$3" host="$4" port="$5" probe="$6" variable="$7"
  if alive "$pidfile"; then say "$name: already running (pid $(cat "$pidfile")) at $host:$port"; return 0; fi
  port_open "$host" "$port" || return 1
  "$probe" || die "port $port on $host is taken by something that is not $product; stop it or set $variable to a free address"
  say "$name: using the $product that already answers at $host:$port (not started by hoptrace)"
}

# report NAME PIDFILE HOST PORT PROBE DETAIL: one status line; false when the service does not answer.
report() {
  local name="$1" pidfile="$2" host="$3" port="$4" probe="$5" detail="$6"
  if ! "$probe"; then say "$name: not answering at $host:$port"; return 1; fi
  if alive "$pidfile"; then say "$name: healthy at $host:$port (${detail}pid $(cat "$pidfile"), started by hoptrace)"
  else say "$name: healthy at $host:$port (not started by hoptrace)"; fi
}

# tls_files: a local certificate authority, one server certificate (for localhost, 127.0.0.1 and
# HOST) and one client certificate under $STATE_DIR/tls, made once with openssl and kept: ca.pem
# (what clients trust), server.pem and server.key (Redis's), kafka-keystore.pem (the same key and
# certificate as Kafka's PEM keystore), client.pem and client.key (what a client shows a broker
# that asks for a certificate). The keys are readable by their owner only. They secure local test
# brokers, nothing else.
TLS_DIR="$STATE_DIR/tls"
tls_files() {
  [ -f "$TLS_DIR/client.key" ] && return 0
  command -v openssl >/dev/null || die "openssl is not installed; the TLS listeners need it (Debian: apt-get install openssl)"
  local tmp="$TLS_DIR.partial" names="DNS:localhost,IP:127.0.0.1"
  [[ "$1" =~ ^[0-9.]+$ ]] && names="$names,IP:$1" || names="$names,DNS:$1"
  rm -rf "$tmp"
  (umask 077 && mkdir -p "$tmp")
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$names" >"$tmp/server.ext"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$tmp/client.ext"
  (umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hoptrace local test CA" \
      -keyout "$tmp/ca.key" -out "$tmp/ca.pem" &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$tmp/server.key" -out "$tmp/server.csr" &&
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 3650 \
      -extfile "$tmp/server.ext" -out "$tmp/server.pem" &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=hoptrace" -keyout "$tmp/client.key" -out "$tmp/client.csr" &&
    openssl x509 -req -in "$tmp/client.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 3650 \
      -extfile "$tmp/client.ext" -out "$tmp/client.pem" &&
    cat "$tmp/server.key" "$tmp/server.pem" >"$tmp/kafka-keystore.pem") >"$tmp/openssl.log" 2>&1 \
    || die "openssl could not make the local certificates; see $tmp/openssl.log"
  chmod 644 "$tmp/ca.pem"
  mv "$tmp" "$TLS_DIR"
}

# verify_sha512 FILE SUMS: true when FILE's SHA-512 is the one in SUMS, a checksum file as Apache
# publishes them: `sha512sum` output ("<hex>  name") or `gpg --print-md` ("name: <hex in groups>").
verify_sha512() {
  local expected actual
  expected="$(sed 's/^[^:]*://' "$2" | tr -d ' \t\r\n' | grep -oiE '^[0-9a-f]{128}' | tr 'A-F' 'a-f')" || return 1
  actual="$(sha512sum "$1" | cut -d' ' -f1)"
  [ -n "$expected" ] && [ "$expected" = "$actual" ]
}
