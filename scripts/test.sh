#!/usr/bin/env bash
# The README's test command: sets up what the tests need, then runs them.
#
#   bash scripts/test.sh [extra cargo test arguments]
#
# The tests use real things: headless Chromium renders report.html, `ip netns`
# builds multi-host networks (root), and two Python packages read our outputs
# independently of our own code. Installed here when missing: Debian packages
# with apt-get (as root), Python packages with pip. Without root, the script
# says in one line what to install and stops before running anything.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || missing+=(chromium)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The mTLS tests read certificates' dates and fingerprints with openssl.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# A real Prometheus receives the remote write; promtool checks /metrics.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# HTTP/2 is tested against a real HTTP/2 server (nginx, listen … http2).
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
# The Moodle site's Redis cache store is tested against a real Redis server.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# An agent with its clock two hours off runs under libfaketime.
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "scripts/test.sh: the tests need ${missing[*]}: run \`sudo apt-get install ${missing[*]}\` (or run this script as root), then again" >&2
    exit 2
  fi
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the network-namespace tests need root (ip netns): run this script with sudo" >&2
  exit 2
fi

# Independent readers of our outputs (controller/tests/py/check_run.py).
if ! python3 -c 'import jsonschema, hdrh' >/dev/null 2>&1; then
  echo "scripts/test.sh: installing jsonschema and hdrhistogram (pip)"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r .ci/requirements-tests.txt
fi

# Every test binary runs even when one fails (--no-fail-fast), so a failure
# in one area never hides the rest; the last line adds up every binary's
# "test result" line: N passed, N failed (, N skipped).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i) ~ /^passed;?$/) p += $(i-1)
         if ($(i) ~ /^failed;?$/) f += $(i-1)
         if ($(i) ~ /^ignored;?$/) s += $(i-1)
       }
       n++
     }
     END {
       if (n == 0) { print "scripts/test.sh: no test binary reported a result" > "/dev/stderr" }
       printf "%d passed, %d failed, %d skipped\n", p, f, s
     }' "$log"
if [ "$status" -ne 0 ] && ! grep -q '^test result: FAILED' "$log"; then
  echo "scripts/test.sh: cargo test exited $status before every test ran (a build error?)" >&2
fi
exit "$status"
