#!/usr/bin/env bash
# bench/run_length.sh BINDIR DURATION_S : controller peak RSS for a 100-step plan, 20 users, remote agent
set -uo pipefail
bin=$1; dur=$2
work=$(mktemp -d)
$bin/loadfleet-testbed --listen 127.0.0.1:18095 --exit-after $((dur + 30)) 2>/dev/null &
tb=$!
sleep 0.5
{
  printf 'name = "mem"\n[target]\nbase_url = "http://127.0.0.1:18095"\n[load]\nusers = 20\nduration = "%ss"\n[[scenario]]\nname = "walk"\n' $dur
  for i in $(seq 1 100); do printf '[[scenario.step]]\nname = "s%d"\npath = "/s%d"\n' $i $i; done
} > $work/plan.toml
/usr/bin/time -f "%M" -o $work/ctl.rss $bin/loadfleet run $work/plan.toml --listen 127.0.0.1:0 --expect-agents 1 -q --out $work/run >/dev/null 2>$work/ctl.err &
ctl=$!
for _ in $(seq 100); do addr=$(grep -o 'listening on [0-9.:]*' $work/ctl.err | head -1 | cut -d' ' -f3); [ -n "$addr" ] && break; sleep 0.1; done
$bin/loadfleet-agent --controller http://$addr --allow-target 127.0.0.1 --once >/dev/null 2>&1
wait $ctl
req=$(python3 -c "import json;print(json.load(open('$work/run/summary.json'))['total']['requests'])")
echo "duration ${dur}s: controller peak RSS $(cat $work/ctl.rss) KiB, $req requests, hlog $(stat -c %s $work/run/latency.hlog) bytes"
kill $tb 2>/dev/null; rm -rf $work
