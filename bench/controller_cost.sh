#!/usr/bin/env bash
# Controller cost at fleet scale: AGENTS simulated agents (real gRPC streams,
# from PROCS swarm processes; controller/examples/swarm.rs) each report 20
# steps every second, SAMPLES latencies per step. The controller is pinned to
# CPU 0 and the swarm to CPU 1. Prints the controller's CPU share per second
# of the run (median and highest, from /proc) and the bytes each agent sent
# per second. Loopback only; the plan's target is never contacted.
#
#   bench/controller_cost.sh [AGENTS] [PROCS] [SECONDS] [SAMPLES]   (defaults: 1000 4 20 200)
#
# A benchmark, not a test: it prints numbers and checks nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
agents=${1:-1000}
procs=${2:-4}
secs=${3:-20}
samples=${4:-200}
cargo build --release --locked -q --bin loadfleet --example swarm
bin=target/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

{
  printf 'name = "controller-cost"\n[target]\nbase_url = "http://127.0.0.1:9"\n'
  printf '[load]\nusers = %d\nduration = "%ds"\n' "$agents" "$secs"
  printf '[[scenario]]\nname = "s"\n'
  for i in $(seq 20); do printf '[[scenario.step]]\nname = "step %02d"\npath = "/%d"\n' "$i" "$i"; done
} >"$work/plan.toml"

taskset -c 0 "$bin/loadfleet" run "$work/plan.toml" --listen 127.0.0.1:0 \
  --expect-agents "$agents" -q --out "$work/run" >"$work/ctl.out" 2>"$work/ctl.err" &
ctl=$!
pids+=("$ctl")
addr=$(controller_addr "$work/ctl.err" "$ctl")
per=$((agents / procs))
for p in $(seq "$procs"); do
  n=$per
  [ "$p" -eq "$procs" ] && n=$((agents - per * (procs - 1)))
  taskset -c 1 "$bin/examples/swarm" "http://$addr" "$n" "swarm$p" "$samples" >"$work/swarm$p.out" 2>&1 &
  pids+=($!)
done

# The controller's CPU time (user + system, clock ticks) once a second.
tck=$(getconf CLK_TCK)
: >"$work/cpu"
while kill -0 "$ctl" 2>/dev/null; do
  awk '{print $14 + $15}' "/proc/$ctl/stat" >>"$work/cpu" 2>/dev/null || true
  sleep 1
done
wait "$ctl" || true
for p in "${pids[@]:1}"; do wait "$p" || true; done
cat "$work"/swarm*.out
python3 - "$work/cpu" "$tck" "$work/run/summary.json" "$agents" <<'PY'
import json, statistics, sys
ticks = [int(x) for x in open(sys.argv[1]) if x.strip()]
tck = int(sys.argv[2])
deltas = [(b - a) / tck for a, b in zip(ticks, ticks[1:])]
# Drop the first seconds (agents attaching, clock pings) and the last one.
steady = deltas[5:-1] or deltas
s = json.load(open(sys.argv[3]))
print(f"controller CPU per second, steady state: median {statistics.median(steady) * 100:.1f}% "
      f"max {max(steady) * 100:.1f}% of one core over {len(steady)} s; total {sum(deltas):.1f} s of CPU")
print(f"summary: {len(s['agents'])} agents, {s['total']['requests']} requests merged")
PY
