#!/usr/bin/env bash
# The open model's timing at a fixed rate: what each of the agent's timing
# modes costs in CPU per request and how late its arrivals leave, beside
# h2load's rate mode (`--rps`, 50 connections) in the same rounds.
#
#   bench/timing.sh [SECONDS] [ROUNDS] [RATE]   (defaults: 10 s, 3 rounds, 5000/s)
#   TIMINGS="timer poll tick timer:2ms" bench/timing.sh
#                                  (the agent's --timing values to run; MODE:W
#                                  adds --timing-window W)
#   LOADFLEET_BIN=DIR bench/timing.sh           (binaries from DIR, not built)
#
# Set-up as bench/peers.sh: nginx, one worker on CPU 0, 16-byte body. The
# generator has CPU 1 to itself: h2load, or a remote loadfleet-agent with one
# worker (its controller runs first, on CPU 0 beside nginx, outside the
# measurement). Requests are counted by nginx; CPU (user + system) comes from
# GNU time, and so do the sleeps (voluntary context switches: each is a
# wake-up to pay for, a large part of the cost at a fixed rate). Send
# lateness (actual minus scheduled start of each arrival) is what the agent
# reports; h2load does not report its own. What every generator's schedule
# looks like from the target comes from nginx's access log (each request's
# arrival, to the millisecond): the requests in the run's busiest 1% of
# milliseconds (p99 of the count per millisecond) and the share of
# milliseconds with no request at all. A steady 5,000/s has 5 in every one;
# a generator that sends in bursts has many more in a few, and none in the
# rest. Steal is the time
# the hypervisor ran something else on CPU 1 during the run: arrivals in a
# stolen gap are late whatever the generator does, so it is printed beside.
#
# A benchmark, not a test: it prints numbers and checks nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-10}
rounds=${2:-3}
rate=${3:-5000}
# shellcheck disable=SC2206
timings=(${TIMINGS:-timer poll tick})
bin=${LOADFLEET_BIN:-target/release}
[ -n "${LOADFLEET_BIN:-}" ] || cargo build --release --locked --bins -q
command -v nginx >/dev/null || { echo "timing.sh: nginx is needed (apt-get install nginx-light)" >&2; exit 2; }
command -v h2load >/dev/null || { echo "timing.sh: h2load is needed (apt-get install nghttp2-client)" >&2; exit 2; }
work=$(mktemp -d)
nginx_pid=
ctl=
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
  [ -n "$ctl" ] && kill "$ctl" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
plain_nginx "$work" "$work/arrivals.log" || exit 2

cat >"$work/plan.toml" <<PLAN
name = "timing-$rate"
[target]
base_url = "${url%/}"
[load]
rate = $rate
duration = "${secs}s"
max_users = 50
[[scenario]]
name = "get"
[[scenario.step]]
name = "home"
path = "/"
PLAN

steal_ms() { awk '$1 == "cpu1" {print $9 * 10}' /proc/stat; }
: >"$work/results.tsv"
# measure NAME COMMAND...: one run on CPU 1; appends
# "name requests cpu_s steal_ms lateness_p50 lateness_p99 lateness_p99_9".
measure() {
  local name=$1 before after stolen user sys late lines
  shift
  lines=$(wc -l <"$work/arrivals.log")
  before=$(served)
  stolen=$(steal_ms)
  /usr/bin/time -f "%U %S %w" -o "$work/time" taskset -c 1 "$@" >"$work/last.out" 2>&1 || true
  stolen=$(($(steal_ms) - stolen))
  after=$(served)
  read -r user sys waits <"$work/time"
  late="- - -"
  if [ -f "$work/run/summary.json" ]; then
    late=$(python3 -c 'import json,sys; l=json.load(open(sys.argv[1]))["send_lateness_ms"] or {}; print(l.get("p50","-"), l.get("p99","-"), l.get("p99_9","-"))' "$work/run/summary.json")
  fi
  shape=$(tail -n +"$((lines + 1))" "$work/arrivals.log" | python3 -c '
import sys
from collections import Counter
t = sorted(round(float(l) * 1000) for l in sys.stdin if l.strip())
# The middle 98% of the requests: not a probe before the start, nor the
# ramp of connections at either end.
t = t[len(t) // 100 : len(t) - len(t) // 100] or [0]
ms = Counter(t)
per = sorted(ms.get(m, 0) for m in range(t[0], t[-1] + 1))
print(per[len(per) * 99 // 100], per.count(0) / len(per) * 100)')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$((after - before - 1))" \
    "$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" "$waits" "$stolen" "${late// /	}" "${shape// /	}" >>"$work/results.tsv"
  printf '  %-14s %s requests, %s ms stolen\n' "$name" "$((after - before - 1))" "$stolen" >&2
}

per_conn=$((rate / 50))
for round in $(seq "$rounds"); do
  echo "round $round of $rounds" >&2
  rm -rf "$work/run"
  measure h2load h2load --h1 -t1 -c50 --rps "$per_conn" -D "$secs" "$url"
  for t in "${timings[@]}"; do
    rm -rf "$work/run"
    taskset -c 0 "$bin/loadfleet" run "$work/plan.toml" --listen 127.0.0.1:0 --expect-agents 1 -q \
      --out "$work/run" >/dev/null 2>"$work/ctl.err" &
    ctl=$!
    addr=$(controller_addr "$work/ctl.err" "$ctl")
    flags=(--timing "${t%%:*}")
    [ "$t" = "${t%%:*}" ] || flags+=(--timing-window "${t#*:}")
    measure "agent $t" "$bin/loadfleet-agent" --controller "http://$addr" --allow-target 127.0.0.1 \
      --once --workers 1 "${flags[@]}"
    wait "$ctl" || true
    ctl=
  done
done

python3 - "$work/results.tsv" "$secs" "$rate" <<'PY'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    name, req, cpu, waits, steal, p50, p99, p999, busiest, idle = line.rstrip("\n").split("\t")
    rows[name].append((int(req), float(cpu), int(steal), p50, p99, p999, int(waits), int(busiest), float(idle)))
secs, rate = float(sys.argv[2]), sys.argv[3]
def med(xs):
    return statistics.median(xs), min(xs), max(xs)
def fmt(v, digits):
    m, lo, hi = v
    return f"{m:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f})"
base = statistics.median(c / r * 1e6 for r, c, *_ in rows["h2load"]) if rows["h2load"] else None
print(f"Fixed rate {rate}/s, {secs:.0f} s per run, {len(rows['h2load'])} round(s); median (min–max).\n")
print("| generator | achieved /s | CPU µs per request | vs h2load | sleeps per request | send lateness p50 ms | p99 ms | p99.9 ms | requests per ms at the target, p99 | ms with no request | steal on CPU 1 ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name, rs in rows.items():
    cpu = [c / r * 1e6 for r, c, *_ in rs if r > 0]
    ratio = f"{statistics.median(cpu) / base:.2f}×" if base and cpu else "-"
    lat = []
    for i in (3, 4, 5):
        vals = [float(x[i]) for x in rs if x[i] not in ("-", "None")]
        lat.append(fmt(med(vals), 3) if vals else "not reported")
    sleeps = fmt(med([x[6] / x[0] for x in rs if x[0] > 0]), 2)
    print(f"| {name} | {fmt(med([r / secs for r, *_ in rs]), 0)} | {fmt(med(cpu), 1)} | {ratio} | {sleeps} | "
          f"{' | '.join(lat)} | {fmt(med([x[7] for x in rs]), 0)} | {fmt(med([x[8] for x in rs]), 0)}% | "
          f"{', '.join(str(x[2]) for x in rs)} |")
PY
