#!/usr/bin/env bash
# Is the agent's memory flat however long the run? A remote agent (one
# worker, CPU 1) runs USERS users in a closed loop for SECONDS against the
# testbed (CPU 0); its RSS is read from /proc every 5 s. Prints the series
# and the growth from the first minute's highest reading to the last.
#
#   bench/memory_flat.sh [SECONDS] [USERS]     (defaults: 300 50)
#   LOADFLEET_BIN=DIR bench/memory_flat.sh     (binaries from DIR, not built)
#
# A benchmark, not a test: it prints numbers and checks nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-300}
users=${2:-50}
bin=${LOADFLEET_BIN:-target/release}
[ -n "${LOADFLEET_BIN:-}" ] || cargo build --release --locked --bins -q
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

taskset -c 0 "$bin/loadfleet-testbed" --listen 127.0.0.1:0 --exit-after $((secs + 120)) 2>"$work/tb.log" >/dev/null &
pids+=($!)
for _ in $(seq 50); do grep -q "listening on" "$work/tb.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/tb.log" | head -1)
printf 'name = "memory-flat"\n[target]\nbase_url = "%s"\n[load]\nusers = %d\nduration = "%ds"\n[[scenario]]\nname = "get"\n[[scenario.step]]\nname = "home"\npath = "/"\n' \
  "$url" "$users" "$secs" >"$work/plan.toml"
taskset -c 0 "$bin/loadfleet" run "$work/plan.toml" --listen 127.0.0.1:0 --expect-agents 1 -q \
  --out "$work/run" >/dev/null 2>"$work/ctl.err" &
pids+=($!)
addr=$(controller_addr "$work/ctl.err" "$!")
taskset -c 1 "$bin/loadfleet-agent" --controller "http://$addr" --allow-target 127.0.0.1 --once --workers 1 >/dev/null 2>&1 &
agent=$!
pids+=("$agent")
: >"$work/rss"
t=0
while kill -0 "$agent" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status" 2>/dev/null || true)
  [ -n "$rss" ] && printf '%d %d\n' "$t" "$rss" >>"$work/rss"
  sleep 5
  t=$((t + 5))
done
python3 - "$work/rss" "$work/run/summary.json" <<'PY'
import json, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
s = json.load(open(sys.argv[2]))
print("seconds  RSS MiB")
for t, kb in rows:
    print(f"{t:7d}  {kb / 1024:7.1f}")
first = max(kb for t, kb in rows if t <= 60)
last = rows[-2][1] if len(rows) > 1 else rows[-1][1]
print(f"{s['total']['requests']:,} requests; highest RSS in the first minute {first / 1024:.1f} MiB, "
      f"at the end {last / 1024:.1f} MiB ({(last - first) / 1024:+.1f} MiB)")
PY
