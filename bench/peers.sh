#!/usr/bin/env bash
# loadfleet beside the load generators people would use instead: wrk, h2load,
# hey, oha, autocannon, k6 and Locust, on loopback against one nginx worker.
#
#   bench/peers.sh            installs what it needs, runs every measurement
#                             ROUNDS times (default 3, tools alternating) and
#                             writes bench/RESULTS.md
#   bench/peers.sh --smoke    2 s each, one round, loadfleet and wrk only;
#                             writes target/bench-smoke/RESULTS.md and fails if
#                             a run served nothing (CI runs this so the
#                             benchmark cannot rot)
#   LOADFLEET_BIN=DIR         take loadfleet's binaries from DIR, unbuilt
#
# Set-up: nginx, one worker pinned to CPU 0, access log off, a 16-byte body;
# every generator pinned to CPU 1; keep-alive; 50 connections unless stated.
# Requests are counted by nginx (stub_status), the same way for every tool;
# CPU (user + system) and peak RSS of the generator come from GNU time.
# Environment: DUR (seconds per run, default 15), ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh
mode=full
[ "${1:-}" = "--smoke" ] && mode=smoke
if [ "$mode" = smoke ]; then
  DUR=${DUR:-2}
  ROUNDS=1
  out=target/bench-smoke/RESULTS.md
else
  DUR=${DUR:-15}
  ROUNDS=${ROUNDS:-3}
  out=bench/RESULTS.md
fi
tools_dir=$root/target/bench-tools
mkdir -p "$tools_dir" "$(dirname "$out")"
work=$(mktemp -d)
nginx_pid=
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
skipped=()

# --- tools ------------------------------------------------------------------
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$work/apt.log" 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$work/apt.log" 2>&1; }
  fi
}
command -v nginx >/dev/null || apt_install nginx-light
command -v wrk >/dev/null || apt_install wrk
command -v nginx >/dev/null || { echo "peers.sh: nginx is needed" >&2; exit 2; }
command -v wrk >/dev/null || { echo "peers.sh: wrk is needed" >&2; exit 2; }
if [ "$mode" = full ]; then
  command -v hey >/dev/null || apt_install hey
  command -v h2load >/dev/null || apt_install nghttp2-client
  export PATH=$tools_dir/bin:$tools_dir/venv/bin:$tools_dir/npm/node_modules/.bin:$PATH
  command -v oha >/dev/null ||
    CARGO_TARGET_DIR=$tools_dir/build cargo install -q oha@1.16.0 --locked --root "$tools_dir" ||
    skipped+=("oha: cargo install failed")
  if ! command -v locust >/dev/null; then
    python3 -m venv "$tools_dir/venv" && "$tools_dir/venv/bin/pip" install -q locust==2.47.0 ||
      skipped+=("Locust: pip install failed")
  fi
  command -v autocannon >/dev/null ||
    npm install -s --prefix "$tools_dir/npm" autocannon@8 >/dev/null 2>&1 ||
    skipped+=("autocannon: npm install failed")
  command -v k6 >/dev/null ||
    skipped+=("k6: Debian has no package and none of this machine's registries provides a build")
  cargo build --locked -q --profile agent-small --bin loadfleet-agent
fi
bin=${LOADFLEET_BIN:-$root/target/release}
bin=$(cd "$bin" && pwd)
[ -n "${LOADFLEET_BIN:-}" ] || cargo build --release --locked -q --bins

# --- the target -------------------------------------------------------------
plain_nginx "$work" || exit 2

# --- one measured run ---------------------------------------------------------
# run TOOL SCENARIO ROUND COMMAND...: appends "tool scenario round requests seconds cpu_s rss_kb".
# Rates are over the configured load duration ($secs), the same for every
# tool, not over the process's lifetime (start-up and writing reports).
secs=$DUR
results=$work/results.tsv
: >"$results"
run() {
  local tool=$1 scenario=$2 round=$3
  shift 3
  local before after
  before=$(served)
  /usr/bin/time -f "%U %S %M" -o "$work/time" taskset -c 1 "$@" >"$work/last.out" 2>&1 || true
  after=$(served)
  read -r user sys rss <"$work/time" || { user=0 sys=0 rss=0; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$scenario" "$round" "$((after - before - 1))" \
    "$secs" "$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" "$rss" >>"$results"
  printf '  %-22s %-10s round %s: %s requests\n' "$tool" "$scenario" "$round" "$((after - before - 1))" >&2
}

# lateness TOOL RUN_DIR: appends "tool p50 p99" of the run's send lateness (ms).
lateness_tsv=$work/lateness.tsv
: >"$lateness_tsv"
lateness() {
  python3 - "$1" "$2/summary.json" >>"$lateness_tsv" <<'PY' || true
import json, sys
late = json.load(open(sys.argv[2]))["send_lateness_ms"]
print(f"{sys.argv[1]}\t{late['p50']}\t{late['p99']}")
PY
}

plan() { # plan NAME USERS|rate=N THINK [SECONDS]
  local f=$work/$1.toml d=${4:-$DUR}
  {
    printf 'name = "%s"\n[target]\nbase_url = "%s"\n[load]\n' "$1" "${url%/}"
    case $2 in
      rate=*) printf 'rate = %s\nduration = "%ss"\nmax_users = 200\n' "${2#rate=}" "$d" ;;
      *) printf 'users = %s\nduration = "%ss"\n' "$2" "$d" ;;
    esac
    printf '[[scenario]]\nname = "get"\n[[scenario.step]]\nname = "home"\npath = "/"\n'
    [ -n "$3" ] && printf 'think = "%s"\n' "$3"
  } >"$f"
  echo "$f"
}

# The remote-agent variant: its controller (cheap, mostly idle) runs first,
# on CPU 0 beside nginx, outside the measurement; the measured process is the
# agent alone, on CPU 1.
ctl_pid=
start_controller() {
  taskset -c 0 "$bin/loadfleet" run "$1" --listen 127.0.0.1:0 --expect-agents 1 -q \
    --out "$work/run-remote" >/dev/null 2>"$work/ctl.err" &
  ctl_pid=$!
  agent_url=http://$(controller_addr "$work/ctl.err" "$ctl_pid")
}

cat >"$work/locustfile.py" <<'PY'
import os
from locust import constant, constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

class Get(FastHttpUser):
    rate = float(os.environ.get("PER_USER_RATE", "0"))
    wait_time = constant_throughput(rate) if rate > 0 else constant(0)

    @task
    def home(self):
        self.client.get("/")
PY

max_plan=$(plan max 50 "")
rate_plan=$(plan rate rate=5000 "")
declare -A max_cmd rate_cmd
max_cmd[loadfleet]="$bin/loadfleet run $max_plan -q --out $work/run-max"
max_cmd[loadfleet-agent]="$bin/loadfleet-agent --controller \$agent_url --allow-target 127.0.0.1 --once --name bench"
max_cmd[wrk]="wrk -t1 -c50 -d${DUR}s $url"
max_cmd[h2load]="h2load --h1 -t1 -c50 -D$DUR $url"
max_cmd[hey]="hey -z ${DUR}s -c 50 $url"
max_cmd[oha]="oha --no-tui -z ${DUR}s -c 50 $url"
max_cmd[autocannon]="autocannon -c 50 -d $DUR $url"
max_cmd[locust]="locust -f $work/locustfile.py --headless -u 50 -r 50 -t ${DUR}s -H ${url%/} --only-summary"
rate_cmd[loadfleet]="$bin/loadfleet run $rate_plan -q --out $work/run-rate"
rate_cmd[loadfleet-agent]="$bin/loadfleet-agent --controller \$agent_url --allow-target 127.0.0.1 --once --name bench"
# loadfleet's default timing sleeps on a high-resolution timer, arrivals
# within 0.75 ms of each other sharing a wake-up; the poll variants poll the
# last 2 ms before each arrival instead (on time to the microsecond, and at
# 5,000/s on one core that is all the time between arrivals). Both are
# measured, with the send lateness each achieved. h2load's rate mode sends
# each connection's requests on its own timer (--rps per connection).
rate_cmd[loadfleet-poll]="$bin/loadfleet run $rate_plan -q --timing poll --out $work/run-rate"
rate_cmd[loadfleet-agent-poll]="$bin/loadfleet-agent --controller \$agent_url --allow-target 127.0.0.1 --once --name bench --timing poll"
rate_cmd[h2load]="h2load --h1 -t1 -c50 --rps 100 -D$DUR $url"
rate_cmd[hey]="hey -z ${DUR}s -c 50 -q 100 $url"
rate_cmd[oha]="oha --no-tui -z ${DUR}s -c 50 -q 5000 $url"
rate_cmd[autocannon]="autocannon -c 50 -d $DUR -R 5000 $url"
rate_cmd[locust]="env PER_USER_RATE=100 locust -f $work/locustfile.py --headless -u 50 -r 50 -t ${DUR}s -H ${url%/} --only-summary"

if [ "$mode" = smoke ]; then
  tools=(loadfleet wrk)
else
  tools=(loadfleet loadfleet-agent wrk h2load hey oha autocannon locust)
fi
available=()
for t in "${tools[@]}"; do
  case $t in
    loadfleet*) available+=("$t") ;;
    *) if command -v "$t" >/dev/null; then available+=("$t"); else skipped+=("$t: not installed"); fi ;;
  esac
done

for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  for t in "${available[@]}"; do
    [ "$t" = loadfleet-agent ] && start_controller "$max_plan"
    eval "run $t max $round ${max_cmd[$t]}"
    [ "$t" = loadfleet-agent ] && { wait "$ctl_pid" || true; }
    for v in "$t" "$t-poll"; do
      [ -n "${rate_cmd[$v]:-}" ] || continue
      [ "$t" = loadfleet-agent ] && start_controller "$rate_plan"
      eval "run $v rate5000 $round ${rate_cmd[$v]}"
      [ "$t" = loadfleet-agent ] && { wait "$ctl_pid" || true; }
      [ "$t" = loadfleet ] && lateness "$v" "$work/run-rate"
      [ "$t" = loadfleet-agent ] && lateness "$v" "$work/run-remote"
      rm -rf "$work"/run-*
    done
    rm -rf "$work"/run-*
  done
done

# Memory: 1,000 busy connections for every tool; loadfleet also with 50,
# 1,000 and 10,000 users that think for 1 s between requests (mostly idle,
# as real users are). And an idle agent waiting for a controller.
conn_dur=$(( DUR < 10 ? DUR : 10 ))
declare -A mem_cmd
mem_plan=$(plan mem1000 1000 "" "$conn_dur")
mem_cmd[loadfleet]="$bin/loadfleet run $mem_plan -q --out $work/run-mem"
mem_cmd[wrk]="wrk -t1 -c1000 -d${conn_dur}s $url"
mem_cmd[h2load]="h2load --h1 -t1 -c1000 -D$conn_dur $url"
mem_cmd[hey]="hey -z ${conn_dur}s -c 1000 $url"
mem_cmd[oha]="oha --no-tui -z ${conn_dur}s -c 1000 $url"
mem_cmd[autocannon]="autocannon -c 1000 -d $conn_dur $url"
mem_cmd[locust]="locust -f $work/locustfile.py --headless -u 1000 -r 1000 -t ${conn_dur}s -H ${url%/} --only-summary"
secs=$conn_dur
mem_cmd[loadfleet-agent]="$bin/loadfleet-agent --controller \$agent_url --allow-target 127.0.0.1 --once --name bench"
for t in "${available[@]}"; do
  [ -n "${mem_cmd[$t]:-}" ] || continue
  [ "$t" = loadfleet-agent ] && start_controller "$mem_plan"
  eval "run $t conn1000 1 ${mem_cmd[$t]}"
  [ "$t" = loadfleet-agent ] && { wait "$ctl_pid" || true; }
  rm -rf "$work"/run-*
done
secs=$DUR
users_list=(50 1000 10000)
[ "$mode" = smoke ] && users_list=(50 1000)
for n in "${users_list[@]}"; do
  p=$(plan "idle$n" "$n" "1s")
  run loadfleet "think$n" 1 "$bin/loadfleet" run "$p" -q --out "$work/run-think"
  rm -rf "$work"/run-*
  if [ "$mode" = full ]; then
    start_controller "$p"
    run loadfleet-agent "think$n" 1 "$bin/loadfleet-agent" --controller "$agent_url" --allow-target 127.0.0.1 --once --name bench
    wait "$ctl_pid" || true
    rm -rf "$work"/run-*
  fi
done
"$bin/loadfleet-agent" --controller "http://127.0.0.1:$((port + 3000))" --allow-target 127.0.0.1 --name idle >/dev/null 2>&1 &
idle=$!
sleep 3
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$idle/status")
kill "$idle"

# --- binary sizes -------------------------------------------------------------
sizes=$work/sizes.tsv
: >"$sizes"
size_of() { # NAME PATH: its size, and whether it is a launcher script
  if [ -n "$2" ] && [ -e "$2" ]; then
    local kind=binary
    [ "$(head -c 2 "$2")" = "#!" ] && kind=script
    printf '%s\t%s\t%s\n' "$1" "$(stat -L -c %s "$2")" "$kind" >>"$sizes"
  fi
}
if [ -e target/agent-small/loadfleet-agent ]; then
  size_of loadfleet-agent target/agent-small/loadfleet-agent
fi
for t in "${available[@]}"; do
  case $t in loadfleet*) ;; *) size_of "$t" "$(command -v "$t")" ;; esac
done

{
  echo "# Peer benchmark results"
  echo
  echo "Written by \`bench/peers.sh${1:+ $1}\` on $(date -u +%Y-%m-%d). Machine: $(nproc) CPUs, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), Linux $(uname -r)."
  echo "nginx $(nginx -v 2>&1 | cut -d/ -f2), one worker on CPU 0, 16-byte body; every generator on CPU 1; loopback; $DUR s per run, $ROUNDS round(s), tools alternating within a round."
  echo "Requests are what nginx counted. CPU is the generator's user + system time (GNU time); for \`loadfleet\` that is the whole process (controller and embedded agent), for \`loadfleet-agent\` the remote agent alone (its controller runs on CPU 0)."
  echo
  python3 "$root/bench/summarize.py" "$results" "$sizes" "$idle_rss" "$lateness_tsv"
  echo
  echo "## Commands"
  echo
  echo '```'
  for t in "${available[@]}"; do
    echo "${max_cmd[$t]}"
    [ -n "${rate_cmd[$t]:-}" ] && echo "${rate_cmd[$t]}"
    [ -n "${rate_cmd[$t-poll]:-}" ] && echo "${rate_cmd[$t-poll]}"
    [ -n "${mem_cmd[$t]:-}" ] && echo "${mem_cmd[$t]}"
  done | sed "s|$work|\$WORK|g; s|$root/||g"
  echo '```'
  if [ "${#skipped[@]}" -gt 0 ]; then
    echo
    echo "## Not measured"
    echo
    for s in "${skipped[@]}"; do echo "- $s"; done
  fi
} >"$out"
cat "$out"
if [ "$mode" = smoke ]; then
  # Every run must have been served, or the benchmark has rotted.
  awk -F'\t' '$4 <= 0 {print "peers.sh: " $1 " " $2 " served nothing"; bad = 1} END {exit bad}' "$results"
  grep -q '^| loadfleet |' "$out" && grep -q '^| wrk |' "$out"
fi
