#!/usr/bin/env bash
# Sidecar / egress mTLS: Symbolon's sidecar listener vs nginx as an egress proxy
# (proxy_pass https:// with proxy_ssl_certificate), side by side in one run.
#
#   bash bench/sidecar.sh        # ROUNDS=3 SECONDS_PER_RUN=10 by default
#
# A local app (the load generator, plain HTTP/1.1) sends requests to the proxy under test, which
# forwards them over TLS 1.3 with a client certificate to an upstream that requires one (a
# separate nginx: `ssl_verify_client on; return 200`). The proxy under test is pinned to core 0
# with one worker; the load generator and the upstream share core 1. Both proxies keep pooled
# keep-alive connections to the upstream, verify its certificate against the same CA and name,
# and present the same client certificate. Scenarios: the app on keep-alive connections, and the
# app opening a new (plain TCP) connection per request.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-10}
CONC=${CONCURRENCY:-32}

need_nginx
bench_setup bench-sidecar

make_certs "$WORK/data"
D=$WORK/data

UP_PORT=18444
SYM_PORT=18001
NGX_PORT=28001

cat >"$WORK/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$UP_PORT ssl;
        server_name localhost;
        ssl_certificate $D/server.pem;
        ssl_certificate_key $D/server.key;
        ssl_client_certificate $D/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.3;
        location / { return 200 "ok"; }
    }
}
EOF

cat >"$WORK/symbolon.toml" <<EOF
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
access_log = false
watch_files = false

[[sidecars]]
name = "bench"
listen = "127.0.0.1:$SYM_PORT"
upstream = "https://127.0.0.1:$UP_PORT"
upstream_tls = { trust_bundle_file = "$D/ca.pem", server_name = "localhost", cert_file = "$D/client.pem", key_file = "$D/client.key", require_mtls = true }
EOF

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    upstream tlsbackend { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass https://tlsbackend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_certificate $D/client.pem;
            proxy_ssl_certificate_key $D/client.key;
            proxy_ssl_trusted_certificate $D/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.3;
        }
    }
}
EOF

taskset -c 1 nginx -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log" >/dev/null 2>&1 &
PIDS+=($!)
wait_port 127.0.0.1 $UP_PORT
taskset -c 0 "$SYM" serve --workers 1 --config "$WORK/symbolon.toml" >"$WORK/symbolon.log" 2>&1 &
SYM_PID=$!
PIDS+=($SYM_PID)
taskset -c 0 nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" >/dev/null 2>&1 &
PIDS+=($!)
wait_port 127.0.0.1 $SYM_PORT
wait_port 127.0.0.1 $NGX_PORT
NGX_MASTER=$(cat "$WORK/nginx.pid")
NGX_PIDS="$NGX_MASTER,$(pgrep -d, -P "$NGX_MASTER")"

run() { # name port pids mode
    taskset -c 1 "$LOADGEN" load --plain --addr "127.0.0.1:$2" --sni localhost --mode "$4" \
        --concurrency "$CONC" --seconds "$SECS" --server-pids "$3" | grep '"done"' |
        sed "s/^{/{\"server\":\"$1\",\"mode\":\"$4\",/"
}

RESULTS=$WORK/results.jsonl
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(openssl version | cut -d' ' -f1-2); symbolon $(git rev-parse --short HEAD 2>/dev/null || echo dev); $ROUNDS rounds x ${SECS}s, concurrency $CONC" >&2
for round in $(seq 1 "$ROUNDS"); do
    for mode in keepalive handshake; do
        run symbolon $SYM_PORT "$SYM_PID" $mode | tee -a "$RESULTS" >&2
        run nginx $NGX_PORT "$NGX_PIDS" $mode | tee -a "$RESULTS" >&2
    done
done

summarize "$RESULTS" "keepalive=app on keep-alive connections" "handshake=app opens a new TCP connection per request"
