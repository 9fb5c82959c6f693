#!/usr/bin/env bash
# Closed-loop throughput and CPU cost per request of loadfleet (controller
# with its embedded agent, one worker thread) against loadfleet-testbed on
# loopback. The target is pinned to CPU 0, the generator to CPU 1.
#
#   bench/e2e.sh [USERS] [SECONDS]      (defaults: 50 users, 15 s)
#
# LOADFLEET_BIN=DIR takes the binaries from DIR instead of building them
# (to compare two builds in one session, alternating).
#
# A benchmark, not a test: it prints numbers and checks nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-50}
secs=${2:-15}
bin=${LOADFLEET_BIN:-target/release}
[ -n "${LOADFLEET_BIN:-}" ] || cargo build --release --locked --bins -q
work=$(mktemp -d)
trap 'kill "$tb" 2>/dev/null || true; rm -rf "$work"' EXIT

taskset -c 0 "$bin/loadfleet-testbed" --listen 127.0.0.1:0 --exit-after $((secs + 30)) 2>"$work/tb.log" >/dev/null &
tb=$!
for _ in $(seq 50); do grep -q "listening on" "$work/tb.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/tb.log" | head -1)

cat >"$work/plan.toml" <<PLAN
name = "bench"
[target]
base_url = "$url"
[load]
users = $users
duration = "${secs}s"
[[scenario]]
name = "hit"
[[scenario.step]]
name = "home"
path = "/"
PLAN

/usr/bin/time -f "%U %S %M" -o "$work/time" \
  taskset -c 1 "$bin/loadfleet" run "$work/plan.toml" --workers 1 -q --out "$work/run" >/dev/null || true
read -r user sys maxrss_kb <"$work/time"
python3 - "$work/run/summary.json" "$user" "$sys" "$maxrss_kb" "$users" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
user, sys_, rss, users = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
t = s["total"]
cpu_us = (user + sys_) * 1e6 / max(t["requests"], 1)
print(f"users {users}: {t['requests']} requests in {s['duration_s']:.1f} s = {t['rps']:.0f} req/s, "
      f"errors {t['errors']}, p50 {t['latency_ms']['p50']:.3f} ms, p99 {t['latency_ms']['p99']:.3f} ms")
print(f"generator CPU {user:.2f} s user + {sys_:.2f} s sys = {cpu_us:.1f} µs per request; peak RSS {rss/1024:.1f} MiB")
PY
