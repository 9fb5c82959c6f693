#!/usr/bin/env bash
# Controller cost at fleet scale: AGENTS simulated agents (real gRPC streams,
# from PROCS swarm processes; controller/examples/swarm.rs) each report 20
# steps every second, SAMPLES latencies per step. The controller is pinned to
# CPU 0 and the swarm to CPU 1. Prints the controller's CPU share per second
# of the run (median and highest, from /proc), its peak RSS, and the bytes
# each agent sent per second. Loopback only; the plan's target is never contacted.
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
# And its peak RSS, as last seen (the run's end, when every agent's totals
# arrive, included: sampled every 0.1 s then).
while kill -0 "$ctl" 2>/dev/null; do
  t=$(date +%s.%N)
  awk -v t="$t" '{print t, $14 + $15}' "/proc/$ctl/stat" >>"$work/cpu" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    awk '/^VmHWM/ {print $2}' "/proc/$ctl/status" >"$work/hwm.new" 2>/dev/null &&
      [ -s "$work/hwm.new" ] && mv "$work/hwm.new" "$work/hwm"
    sleep 0.1
  done
done
wait "$ctl" || true
for p in "${pids[@]:1}"; do wait "$p" || true; done
cat "$work"/swarm*.out
echo "controller peak RSS: $(( $(cat "$work/hwm" 2>/dev/null || echo 0) / 1024 )) MiB"
python3 - "$work/cpu" "$tck" "$work/run/summary.json" "$agents" <<'PY'
import json, statistics, sys
samples = [(float(t), int(c)) for t, c in (line.split() for line in open(sys.argv[1]) if line.strip())]
tck = int(sys.argv[2])
# CPU seconds per second of wall time between samples (about a second apart).
deltas = [(c1 - c0) / tck / (t1 - t0) for (t0, c0), (t1, c1) in zip(samples, samples[1:])]
# Drop the first seconds (agents attaching, clock pings) and the last one.
steady = deltas[5:-1] or deltas
# Agents report in a burst once a second, so a one-second sample can hold
# one burst or two; five seconds show the highest sustained share.
mid = samples[5:-1] or samples
fives = [(c1 - c0) / tck / (t1 - t0) for (t0, c0), (t1, c1) in zip(mid, mid[5:])]
s = json.load(open(sys.argv[3]))
print(f"controller CPU per second, steady state: median {statistics.median(steady) * 100:.1f}% "
      f"max {max(steady) * 100:.1f}% of one core over {len(steady)} s; "
      f"highest 5 s: {max(fives or [0]) * 100:.1f}%; total {(samples[-1][1] - samples[0][1]) / tck:.1f} s of CPU")
print(f"summary: {len(s['agents'])} agents, {s['total']['requests']} requests merged")
skews = sorted(a["start_skew_ms"] for a in s["agents"].values() if a.get("start_skew_ms") is not None)
if skews:
    print(f"start skew across {len(skews)} agents: median {statistics.median(skews):.3f} ms, "
          f"max {skews[-1]:.3f} ms; reports late {s['late_reports']}, dropped {s['dropped_reports']}")
PY
