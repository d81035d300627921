#!/usr/bin/env bash
# Local Apache Kafka (one KRaft broker+controller) for hoptrace: install | start | stop | status.
# Address from HOPTRACE_KAFKA_BOOTSTRAP (default 127.0.0.1:9092); the controller listens on the
# next port (HOPTRACE_KAFKA_CONTROLLER_PORT), a SASL_PLAINTEXT listener (mechanism PLAIN) on the one
# after (HOPTRACE_KAFKA_SASL_PORT) and a SASL_SSL listener (SCRAM-SHA-512, or OAUTHBEARER with unsigned
# test tokens; the server
# certificate of lib.sh's local CA: trust $STATE_DIR/tls/ca.pem) on the one after that
# (HOPTRACE_KAFKA_SASL_SSL_PORT), both for user hoptrace, password hoptrace-local-secret (a local test
# broker's); and an SSL listener that wants a client certificate of that CA (mutual TLS:
# $STATE_DIR/tls/client.pem and client.key) on the port after those (HOPTRACE_KAFKA_SSL_PORT). Jars come from Maven Central through mvn and pom.xml; without mvn, from the Apache
# release tarball.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

address "${HOPTRACE_KAFKA_BOOTSTRAP:-127.0.0.1:9092}" HOST PORT
CONTROLLER_PORT="${HOPTRACE_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
[[ "$CONTROLLER_PORT" =~ ^[0-9]{1,5}$ ]] || die "HOPTRACE_KAFKA_CONTROLLER_PORT is not a port number: '$CONTROLLER_PORT'"
SASL_PORT="${HOPTRACE_KAFKA_SASL_PORT:-$((PORT + 2))}"
[[ "$SASL_PORT" =~ ^[0-9]{1,5}$ ]] || die "HOPTRACE_KAFKA_SASL_PORT is not a port number: '$SASL_PORT'"
SASL_SSL_PORT="${HOPTRACE_KAFKA_SASL_SSL_PORT:-$((PORT + 3))}"
[[ "$SASL_SSL_PORT" =~ ^[0-9]{1,5}$ ]] || die "HOPTRACE_KAFKA_SASL_SSL_PORT is not a port number: '$SASL_SSL_PORT'"
SSL_PORT="${HOPTRACE_KAFKA_SSL_PORT:-$((PORT + 4))}"
[[ "$SSL_PORT" =~ ^[0-9]{1,5}$ ]] || die "HOPTRACE_KAFKA_SSL_PORT is not a port number: '$SSL_PORT'"
SASL_USER=hoptrace
SASL_PASSWORD=hoptrace-local-secret
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")"
HEAP="${HOPTRACE_KAFKA_HEAP:-512m}"
DIR="$STATE_DIR/kafka"
LIBS="$DIR/libs-$VERSION"
PIDFILE="$DIR/kafka.pid"

is_kafka() { python3 "$HERE/kafka_probe.py" "$HOST:$PORT"; }

install() {
  [ -f "$LIBS/kafka_2.13-$VERSION.jar" ] && return 0
  command -v java >/dev/null || die "java is not installed; Kafka $VERSION needs Java 17 or newer"
  mkdir -p "$DIR"
  if command -v mvn >/dev/null; then
    say "kafka: resolving Apache Kafka $VERSION and its dependencies from Maven Central"
    mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIBS.partial" || die "mvn could not resolve org.apache.kafka:kafka_2.13:$VERSION; check your Maven settings"
  else
    say "kafka: mvn not found, downloading the Apache Kafka $VERSION release"
    local url="https://archive.apache.org/dist/kafka/$VERSION/kafka_2.13-$VERSION.tgz" tarball="$DIR/kafka-$VERSION.tgz"
    curl -fsSL "$url" -o "$tarball" && curl -fsSL "$url.sha512" -o "$tarball.sha512" \
      || die "could not download $url; install Maven (apt-get install maven) and retry"
    verify_sha512 "$tarball" "$tarball.sha512" \
      || { rm -f "$tarball"; die "$url does not match its published SHA-512 ($url.sha512): not unpacked; retry, or install Maven"; }
    tar -xzf "$tarball" -C "$DIR" && rm -f "$tarball" "$tarball.sha512" || die "could not unpack $tarball"
    mv "$DIR/kafka_2.13-$VERSION/libs" "$LIBS.partial" && rm -rf "$DIR/kafka_2.13-$VERSION"
  fi
  mv "$LIBS.partial" "$LIBS"
}

write_config() {
  cat >"$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,SASL_SSL://$HOST:$SASL_SSL_PORT,SSL://$HOST:$SSL_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,SASL_SSL://$HOST:$SASL_SSL_PORT,SSL://$HOST:$SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
# The SASL listeners: what hoptrace's clients do against a secured broker is tested here.
# SASL_PLAINTEXT with PLAIN (users in the JAAS line); SASL_SSL with SCRAM-SHA-512, as managed Kafka
# services offer it (the user's credential is stored in the cluster's metadata: add_scram_user).
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$SASL_USER" password="$SASL_PASSWORD" user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
# OAUTHBEARER with Kafka's unsecured validator (tokens signed with "alg":"none"): the client side of
# the mechanism is what is tested here, not an identity provider.
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="$SASL_USER";
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/kafka-keystore.pem
# The mutual-TLS listener: a client shows a certificate of the local CA.
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$TLS_DIR/kafka-keystore.pem
listener.name.ssl.ssl.truststore.type=PEM
listener.name.ssl.ssl.truststore.location=$TLS_DIR/ca.pem
listener.name.ssl.ssl.client.auth=required
log.dirs=$DIR/data
num.partitions=1
# Room for messages with oversized headers (tests send megabytes of baggage).
message.max.bytes=4194304
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
PROPS
}

JAVA_OPTS=(-Xms128m "-Xmx$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$HERE/log4j2.properties" -cp "$LIBS/*")

# add_scram_user: the SASL_SSL listener's user, as a SCRAM-SHA-512 credential in the running cluster (the same
# each time: setting it again changes nothing).
add_scram_user() {
  java "${JAVA_OPTS[@]}" kafka.admin.ConfigCommand --bootstrap-server "$HOST:$PORT" --alter --entity-type users \
    --entity-name "$SASL_USER" --add-config "SCRAM-SHA-512=[iterations=4096,password=$SASL_PASSWORD]" >"$DIR/scram.log" 2>&1 \
    || die "could not add the SCRAM user of the SASL_SSL listener; see $DIR/scram.log"
}

start() {
  already_up kafka Kafka "$PIDFILE" "$HOST" "$PORT" is_kafka HOPTRACE_KAFKA_BOOTSTRAP && return 0
  port_open "$HOST" "$CONTROLLER_PORT" && die "controller port $CONTROLLER_PORT on $HOST is taken; set HOPTRACE_KAFKA_CONTROLLER_PORT to a free port"
  port_open "$HOST" "$SASL_PORT" && die "SASL port $SASL_PORT on $HOST is taken; set HOPTRACE_KAFKA_SASL_PORT to a free port"
  port_open "$HOST" "$SASL_SSL_PORT" && die "SASL_SSL port $SASL_SSL_PORT on $HOST is taken; set HOPTRACE_KAFKA_SASL_SSL_PORT to a free port"
  port_open "$HOST" "$SSL_PORT" && die "SSL port $SSL_PORT on $HOST is taken; set HOPTRACE_KAFKA_SSL_PORT to a free port"
  install
  tls_files "$HOST"
  write_config
  if [ ! -f "$DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java "${JAVA_OPTS[@]}" kafka.tools.StorageTool random-uuid)"
    java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format --ignore-formatted -c "$DIR/server.properties" \
      -t "$cluster_id" >"$DIR/format.log" 2>&1 || die "formatting the Kafka storage failed; see $DIR/format.log"
  fi
  # setsid: the broker outlives the shell (and the test run) that started it, until `stop`.
  setsid java "${JAVA_OPTS[@]}" kafka.Kafka "$DIR/server.properties" >"$DIR/kafka.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  echo "$VERSION" >"$DIR/version"
  if ! wait_for 90 is_kafka; then
    alive "$PIDFILE" || die "kafka exited during start-up; see $DIR/kafka.log"
    die "kafka did not answer within 90 s; see $DIR/kafka.log"
  fi
  add_scram_user
  say "kafka: started Apache Kafka $VERSION (pid $(cat "$PIDFILE")) at $HOST:$PORT"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_pid kafka "$PIDFILE" ;;
  status) report kafka "$PIDFILE" "$HOST" "$PORT" is_kafka "Apache Kafka $(cat "$DIR/version" 2>/dev/null), " ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
