#!/usr/bin/env bash
# Open-model accuracy on one agent: achieved versus target arrival rate and
# send lateness (actual minus intended start of each iteration), at several
# rates. The target and the controller share CPU 0; the agent process (one
# worker) has CPU 1 to itself. Loopback only.
#
#   bench/open_rate.sh [SECONDS] [RATES...]     (defaults: 10 s; 1000 10000 50000)
#   AGENT_FLAGS="--timing poll" bench/open_rate.sh   (the polling timing)
#   LOADFLEET_BIN=DIR bench/open_rate.sh              (binaries from DIR, not built)
#
# A benchmark, not a test: it prints numbers and checks nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-10}
shift || true
rates=("${@:-1000 10000 50000}")
# shellcheck disable=SC2206
rates=(${rates[*]})
bin=${LOADFLEET_BIN:-target/release}
[ -n "${LOADFLEET_BIN:-}" ] || cargo build --release --locked --bins -q
work=$(mktemp -d)
trap 'kill "$tb" 2>/dev/null || true; rm -rf "$work"' EXIT

taskset -c 0 "$bin/loadfleet-testbed" --listen 127.0.0.1:0 --exit-after 3600 2>"$work/tb.log" >/dev/null &
tb=$!
for _ in $(seq 50); do grep -q "listening on" "$work/tb.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/tb.log" | head -1)

# Time the hypervisor ran something else on CPU 1 (the agent's), in ms: the
# "steal" column of /proc/stat (USER_HZ ticks). A virtual CPU that is paused
# for milliseconds makes every arrival in that gap late, whatever the agent
# does, so it is printed beside the lateness it explains.
steal_ms() { awk '$1 == "cpu1" {print $9 * 10}' /proc/stat; }

printf '| target /s | achieved /s | dropped | lateness p50 ms | lateness p99 ms | agent CPU | steal on CPU 1 |\n|---|---|---|---|---|---|---|\n'
for rate in "${rates[@]}"; do
  cat >"$work/plan.toml" <<PLAN
name = "open-$rate"
[target]
base_url = "$url"
[load]
rate = $rate
duration = "${secs}s"
max_users = 500
[[scenario]]
name = "hit"
[[scenario.step]]
name = "home"
path = "/"
PLAN
  taskset -c 0 "$bin/loadfleet" run "$work/plan.toml" --listen 127.0.0.1:0 --expect-agents 1 \
    -q --out "$work/run-$rate" >/dev/null 2>"$work/ctl.err" &
  ctl=$!
  addr=$(controller_addr "$work/ctl.err" "$ctl")
  stolen=$(steal_ms)
  # shellcheck disable=SC2086
  /usr/bin/time -f "%U %S" -o "$work/time" \
    taskset -c 1 "$bin/loadfleet-agent" --controller "http://$addr" --allow-target 127.0.0.1 --once --workers 1 ${AGENT_FLAGS:-} 2>/dev/null || true
  stolen=$(($(steal_ms) - stolen))
  wait "$ctl" || true
  read -r user sys <"$work/time"
  python3 - "$work/run-$rate/summary.json" "$rate" "$secs" "$user" "$sys" "$stolen" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
rate, secs, user, sys_ = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
started = s["total"]["requests"] + s["dropped_iterations"]
lat = s.get("send_lateness_ms") or {}
print(f"| {rate:.0f} | {s['total']['requests'] / secs:.1f} | {s['dropped_iterations']} | "
      f"{lat.get('p50', float('nan')):.3f} | {lat.get('p99', float('nan')):.3f} | "
      f"{(user + sys_) / secs * 100:.0f}% of a core | {sys.argv[6]} ms |")
PY
done
