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

# plain_nginx WORK [ACCESS_LOG]: starts the benchmarks' target: nginx, one
# worker pinned to CPU 0, a 16-byte body at /, stub_status at /nginx_status,
# keep-alive without limit. The access log is off unless ACCESS_LOG names a
# file, which then gets each request's arrival time ($msec, one line each).
# Sets nginx_pid, port and url; the caller kills nginx_pid. A random port may
# be taken (or in TIME_WAIT), so it tries a few.
plain_nginx() {
  local work=$1 log="access_log off;"
  [ -n "${2:-}" ] && log="log_format arrival '\$msec'; access_log $2 arrival;"
  for _ in 1 2 3 4 5; do
    port=$((30000 + RANDOM % 20000))
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
  $log
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$port backlog=16384;
    location = / { default_type text/plain; return 200 "hello, loadfleet"; }
    location = /nginx_status { stub_status; }
  }
}
CONF
    taskset -c 0 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>>"$work/nginx.log" &
    nginx_pid=$!
    url=http://127.0.0.1:$port/
    for _ in $(seq 50); do
      kill -0 "$nginx_pid" 2>/dev/null || break
      curl -sf "${url}nginx_status" >/dev/null && return 0
      sleep 0.1
    done
    kill "$nginx_pid" 2>/dev/null || true
    nginx_pid=
  done
  echo "nginx did not start:" >&2
  cat "$work/nginx.log" >&2
  return 1
}

# served: the requests nginx has counted (stub_status), its own status
# request included.
served() { curl -sf "http://127.0.0.1:$port/nginx_status" | awk 'NR == 3 {print $3}'; }
