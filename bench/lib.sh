# Shared by the bench scripts (sourced, not run).

# controller_addr ERRFILE PID: the address a `loadfleet run --listen
# 127.0.0.1:0` controller bound, read from the line it always prints on
# standard error. Fails (printing that file) when the controller exits first
# or says nothing within 10 s. Port 0 lets the kernel pick a free port: a
# random one may be held by one of thousands of client connections.
controller_addr() {
  local err=$1 pid=$2 addr=
  for _ in $(seq 200); do
    addr=$(grep -o 'listening on [0-9.:]*' "$err" 2>/dev/null | head -1 | cut -d' ' -f3)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "the controller did not start:" >&2
  cat "$err" >&2
  return 1
}
