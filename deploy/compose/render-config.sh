#!/bin/sh
# render-config.sh TEMPLATE OUTPUT [COMMAND [ARG...]]
#
# Writes TEMPLATE to OUTPUT with every ${env:NAME:-default} replaced by the value of the
# environment variable NAME, or by default when NAME is unset or empty (the collector's
# own rule), then runs COMMAND, if given, in this process (exec). For programs that do not
# expand variables in their configuration: Prometheus and deploy/prometheus/prometheus.yml.
# POSIX sh, sed and grep only, so it runs in the busybox-based prom/prometheus image.
set -eu

template=$1
output=$2
shift 2

cp "$template" "$output.tmp"
for name in $(grep -o '\${env:[A-Za-z_][A-Za-z0-9_]*' "$template" | sed 's/^\${env://' | sort -u); do
  eval "value=\${$name:-}"
  if [ -n "$value" ]; then
    # Escape what sed's replacement would interpret: the backslash, the delimiter and &.
    escaped=$(printf '%s' "$value" | sed 's/[\\|&]/\\&/g')
    sed -i "s|\${env:$name:-[^}]*}|$escaped|g; s|\${env:$name}|$escaped|g" "$output.tmp"
  fi
done
# What is left is unset: its default.
sed -i -E 's/\$\{env:[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}/\1/g' "$output.tmp"
mv "$output.tmp" "$output"

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
