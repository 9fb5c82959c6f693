#!/usr/bin/env bash
# loadfleet beside wrk over HTTPS (HTTP/1.1): keep-alive, and a new TLS
# connection for every request (also beside h2load, whose clients of one
# request each open a connection each) (loadfleet's `connections = "per_request"`, wrk with
# `Connection: close`, which nginx honours by closing after each response,
# so wrk reconnects and shakes hands again), on loopback against one nginx
# worker. And beside h2load over HTTP/2 (TLS, ALPN): 50 users, each with
# one connection and one request in flight (h2load -m 1), as a browser tab.
#
#   bench/https.sh            ROUNDS (default 3) alternating rounds of each;
#                             prints a table of generator CPU per request
#   LOADFLEET_BIN=DIR         take loadfleet's binaries from DIR, unbuilt
#
# Set-up as bench/peers.sh: nginx, one worker pinned to CPU 0, a 16-byte
# body, TLS 1.3 with a self-signed P-256 certificate; every generator on
# CPU 1; 50 connections. Requests are counted by nginx (stub_status); CPU
# (user + system) of the generator comes from GNU time. loadfleet runs as a
# remote agent (its controller, mostly idle, on CPU 0 outside the
# measurement). Environment: DUR (seconds per run, default 10), ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d)
nginx_pid=
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
for t in nginx wrk h2load openssl; do
  command -v "$t" >/dev/null || { echo "https.sh: $t is needed (apt-get install nginx-light wrk nghttp2-client openssl)" >&2; exit 2; }
done
bin=${LOADFLEET_BIN:-$root/target/release}
[ -n "${LOADFLEET_BIN:-}" ] || cargo build --release --locked -q --bins
bin=$(cd "$bin" && pwd)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
port=$((30000 + RANDOM % 20000))
status=$((port + 1))
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
worker_rlimit_nofile 40000;
events { worker_connections 30000; }
http {
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  ssl_protocols TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$port ssl http2 backlog=16384;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location = / { default_type text/plain; return 200 "hello, loadfleet"; }
  }
  server {
    listen 127.0.0.1:$status;
    location = /nginx_status { stub_status; }
  }
}
CONF
taskset -c 0 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx.log" &
nginx_pid=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$status/nginx_status" >/dev/null && break
  sleep 0.1
done
served() { curl -sf "http://127.0.0.1:$status/nginx_status" | awk 'NR == 3 {print $3}'; }
url=https://127.0.0.1:$port/

results=$work/results.tsv
: >"$results"
run() { # run TOOL SCENARIO COMMAND...
  local tool=$1 scenario=$2
  shift 2
  local before after
  before=$(served)
  /usr/bin/time -f "%U %S" -o "$work/time" taskset -c 1 "$@" >"$work/last.out" 2>&1 || true
  after=$(served)
  read -r user sys <"$work/time" || { user=0 sys=0; }
  printf '%s\t%s\t%s\t%s\n' "$tool" "$scenario" "$((after - before - 1))" \
    "$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" >>"$results"
  printf '  %-10s %-10s %s requests\n' "$tool" "$scenario" "$((after - before - 1))" >&2
}
plan() { # plan NAME CONNECTIONS RESUMPTION VERSION
  printf 'name = "%s"\n[target]\nbase_url = "%s"\nca_file = "%s"\n[http]\nconnections = "%s"\ntls_resumption = %s\nversion = "%s"\n[load]\nusers = 50\nduration = "%ss"\n[[scenario]]\nname = "get"\n[[scenario.step]]\nname = "home"\npath = "/"\n' \
    "$1" "${url%/}" "$work/cert.pem" "$2" "$3" "${4:-1.1}" "$DUR" >"$work/$1.toml"
  echo "$work/$1.toml"
}
keep=$(plan keepalive per_user true)
fresh=$(plan fresh per_request true)
# Every connection a full handshake, as wrk does (it resumes no session).
full=$(plan fresh-full per_request false)
h2=$(plan http2 per_user true 2)
agent() { # agent PLAN: the measured agent, its controller on CPU 0
  taskset -c 0 "$bin/loadfleet" run "$1" --listen 127.0.0.1:0 --expect-agents 1 -q \
    --out "$work/run" >/dev/null 2>"$work/ctl.err" &
  local ctl=$!
  local addr
  addr=$(controller_addr "$work/ctl.err" "$ctl")
  run loadfleet "$2" "$bin/loadfleet-agent" --controller "http://$addr" --allow-target 127.0.0.1 --once --name bench
  wait "$ctl" || true
  rm -rf "$work/run"
}
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  agent "$keep" keepalive
  run wrk keepalive wrk -t1 -c50 -d"${DUR}s" "$url"
  agent "$fresh" "fresh, resumed"
  agent "$full" "fresh, full"
  run wrk "fresh, full" wrk -t1 -c50 -d"${DUR}s" -H "Connection: close" "$url"
  # h2load: 2,000 clients of one request each (-n = -c), so each request
  # has a connection and a full handshake of its own, all opened at once.
  run h2load "fresh, full" h2load --h1 -t1 -n 2000 -c 2000 "$url"
  agent "$h2" http2
  run h2load http2 h2load -t1 -c50 -m1 -D"$DUR" "$url"
done
python3 - "$results" <<'PY'
import sys, collections, statistics
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    tool, scenario, req, cpu = line.split("\t")
    req, cpu = int(req), float(cpu)
    if req > 0:
        rows[(tool, scenario)].append((req, cpu * 1e6 / req))
print("| generator | scenario | requests (median) | CPU µs per request (median of rounds) |")
print("|---|---|---|---|")
for (tool, scenario), v in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"| {tool} | {scenario} | {statistics.median(r for r, _ in v):,.0f} | {statistics.median(c for _, c in v):.1f} |")
PY
