#!/usr/bin/env bash
# Does memory grow with the plan's size? For each step count N, a plan of N
# steps is run by one user for one iteration against the testbed: embedded
# (`loadfleet run`), then as a fleet (a controller and one remote agent).
# Prints each process's peak RSS (from /usr/bin/time) per N.
#
#   bench/plan_size.sh [N ...]                 (defaults: 1 100 300 1000)
#   LOADFLEET_BIN=DIR bench/plan_size.sh       (binaries from DIR, not built)
#
# A benchmark, not a test: it prints numbers and checks only that each run
# completed every step.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 100 300 1000)
bin=${LOADFLEET_BIN:-target/release}
[ -n "${LOADFLEET_BIN:-}" ] || cargo build --release --locked --bins -q
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin/loadfleet-testbed" --listen 127.0.0.1:0 --exit-after 3600 2>"$work/tb.log" >/dev/null &
pids+=($!)
for _ in $(seq 50); do grep -q "listening on" "$work/tb.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/tb.log" | head -1)

peak() { awk '/Maximum resident/ {printf "%.1f", $NF / 1024}' "$1"; }
requests() {
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["total"]["requests"], s["status"])' "$1"
}

printf '%6s  %14s  %14s  %14s\n' steps "embedded MiB" "agent MiB" "controller MiB"
for n in "${sizes[@]}"; do
  plan="$work/plan-$n.toml"
  {
    printf 'name = "plan-size-%d"\n[target]\nbase_url = "%s"\n[load]\nusers = 1\niterations = 1\n' "$n" "$url"
    printf '[[scenario]]\nname = "long"\n'
    for i in $(seq "$n"); do printf '[[scenario.step]]\nname = "s%d"\npath = "/"\n' "$i"; done
  } >"$plan"
  /usr/bin/time -v "$bin/loadfleet" run "$plan" -q --out "$work/emb-$n" >/dev/null 2>"$work/emb-$n.time"
  read -r got status < <(requests "$work/emb-$n/summary.json")
  [ "$got" = "$n" ] || { echo "embedded run of $n steps sent $got requests ($status)" >&2; exit 1; }

  /usr/bin/time -v "$bin/loadfleet" run "$plan" --listen 127.0.0.1:0 --expect-agents 1 -q \
    --out "$work/fleet-$n" >/dev/null 2>"$work/ctl-$n.err" &
  ctl=$!
  pids+=("$ctl")
  addr=$(controller_addr "$work/ctl-$n.err" "$ctl")
  /usr/bin/time -v "$bin/loadfleet-agent" --controller "http://$addr" --allow-target 127.0.0.1 \
    --once --workers 1 >/dev/null 2>"$work/agent-$n.time"
  wait "$ctl"
  read -r got status < <(requests "$work/fleet-$n/summary.json")
  [ "$got" = "$n" ] || { echo "fleet run of $n steps sent $got requests ($status)" >&2; exit 1; }
  printf '%6d  %14s  %14s  %14s\n' "$n" "$(peak "$work/emb-$n.time")" \
    "$(peak "$work/agent-$n.time")" "$(peak "$work/ctl-$n.err")"
done
