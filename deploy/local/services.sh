#!/usr/bin/env bash
# Local Kafka + Redis for hoptrace: up | down | status (each also takes one service name).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
action="${1:-status}"
services=("${@:2}")
[ ${#services[@]} -eq 0 ] && services=(redis kafka)
case "$action" in
  up) for s in "${services[@]}"; do bash "$HERE/$s.sh" start; done ;;
  down) for s in "${services[@]}"; do bash "$HERE/$s.sh" stop; done ;;
  status) rc=0; for s in "${services[@]}"; do bash "$HERE/$s.sh" status || rc=1; done; exit $rc ;;
  *) echo "usage: $0 up|down|status [redis] [kafka]" >&2; exit 2 ;;
esac
