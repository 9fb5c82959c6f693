#!/usr/bin/env bash
# Instructions per request on the agent's HTTP/1.1 request path, counted by
# callgrind (instructions do not drift with the machine's noise as CPU time
# does): a remote agent with one worker and 50 users in a closed loop for
# SECONDS against nginx (one worker on CPU 0), its worker thread's
# instructions divided by the requests it made.
#
#   bench/callgrind.sh [SECONDS] [BIN_DIR...]    (defaults: 6 s; target/release)
#   KEEP=DIR bench/callgrind.sh ...                (keeps each worker thread's
#                                                   profile in DIR, for callgrind_annotate)
#   JOURNEY=flow bench/callgrind.sh ...            (a journey of a group, a loop and a
#                                                   condition instead of one plain step;
#                                                   builds before control flow cannot run it)
#
# Several BIN_DIRs (release builds of two commits, say) are measured in
# turn, in the same hour, which is the only fair comparison. Needs valgrind
# and nginx. A benchmark, not a test: it prints numbers and checks nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-6}
shift || true
dirs=("${@:-target/release}")
[ $# -gt 0 ] || cargo build --release --locked --bins -q
work=$(mktemp -d)
nginx_pid=
trap 'kill "$nginx_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
plain_nginx "$work"

printf '| build | requests | worker thread instructions | per request |\n|---|---|---|---|\n'
for bin in "${dirs[@]}"; do
  cat >"$work/plan.toml" <<PLAN
name = "callgrind"
[target]
base_url = "$url"
[load]
users = 50
ramp_up = "0s"
duration = "${secs}s"
[[scenario]]
name = "hit"
PLAN
  if [ "${JOURNEY:-straight}" = flow ]; then
    # Three requests per iteration: a group of a two-pass loop, then a
    # request under a condition on the last status.
    cat >>"$work/plan.toml" <<'PLAN'
[[scenario.step]]
group = "visit"
  [[scenario.step.step]]
  repeat = 2
    [[scenario.step.step.step]]
    name = "home"
    path = "/"
  [[scenario.step.step]]
  if = "status == 200"
    [[scenario.step.step.step]]
    name = "again"
    path = "/"
PLAN
  else
    printf '[[scenario.step]]\nname = "home"\npath = "/"\n' >>"$work/plan.toml"
  fi
  rm -f "$work"/callgrind.out.*
  taskset -c 0 "$bin/loadfleet" run "$work/plan.toml" --listen 127.0.0.1:0 --expect-agents 1 \
    -q --out "$work/run" >/dev/null 2>"$work/ctl.err" &
  ctl=$!
  addr=$(controller_addr "$work/ctl.err" "$ctl")
  taskset -c 1 valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$work/callgrind.out.%p" \
    "$bin/loadfleet-agent" --controller "http://$addr" --allow-target 127.0.0.1 --once --workers 1 \
    >/dev/null 2>"$work/valgrind.err" || true
  wait "$ctl" || true
  # The worker thread is the one that ran the most instructions.
  worker_file=$(for f in "$work"/callgrind.out.*; do
    echo "$(awk '/^summary:|^totals:/ {print $2; exit}' "$f") $f"
  done | sort -n | tail -1)
  worker=${worker_file%% *}
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "${worker_file#* }" "$KEEP/$(echo "$bin" | tr '/' '_').callgrind"
  fi
  requests=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["requests"])' \
    "$work/run/summary.json")
  python3 - "$bin" "$requests" "$worker" <<'PY'
import sys
bin_, requests, worker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f"| {bin_} | {requests:,} | {worker:,} | {worker / max(requests, 1):,.0f} |")
PY
  rm -rf "$work/run"
done
