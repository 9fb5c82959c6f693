#!/usr/bin/env bash
# Checks the deployment files as far as this machine allows; .ci/run calls
# it after the build. Any warning fails it.
#
#   deploy/check.sh AGENT_BINARY
set -euo pipefail
agent=$(realpath "$1")
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# systemd: the unit (and the token drop-in merged into it) with the agent
# binary where the unit expects it. `verify` only warns about unknown keys,
# so any output is a failure.
for variant in mtls token; do
  unit="$work/$variant/loadfleet-agent.service"
  mkdir -p "$(dirname "$unit")"
  sed "s#/usr/local/bin/loadfleet-agent#$agent#g" systemd/loadfleet-agent.service >"$unit"
  if [ "$variant" = token ]; then
    # A drop-in's settings follow the unit's; an empty LoadCredential= resets them.
    sed -n '/^\[Service\]/,$p' systemd/token.conf | tail -n +2 >"$work/dropin"
    sed -i "/^\[Service\]/r $work/dropin" "$unit"
  fi
  out=$(systemd-analyze verify "$unit" 2>&1 || true)
  if [ -n "$out" ]; then
    echo "systemd-analyze verify ($variant):"
    echo "$out"
    exit 1
  fi
  echo "systemd unit ($variant): verified"
done
