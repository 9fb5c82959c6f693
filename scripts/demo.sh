#!/usr/bin/env bash
# The README's demo command: sets up what the demo needs, then runs it.
#
#   bash scripts/demo.sh [loadfleet demo arguments, e.g. --full or --out DIR]
#
# The demo compares Moodle's application cache in files and in a real Redis
# server, so it needs redis-server (it starts a server of its own on a free
# loopback port and stops it at the end). Installed here when missing, with
# apt-get as root; without root the script says in one line what to
# install and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/demo.sh: installing redis-server (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "scripts/demo.sh: the demo needs redis-server: run \`sudo apt-get install redis-server\` (or this script as root), then again" >&2
    exit 2
  fi
fi
exec cargo run --locked --bin loadfleet -- demo "$@"
