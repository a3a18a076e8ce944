#!/usr/bin/env bash
# Symbolon vs nginx, side by side in one run, on this machine.
#
#   bash bench/run.sh            # ROUNDS=3 SECONDS_PER_RUN=10 by default
#
# Each server is pinned to core 0 (one worker: `serve --workers 1`, a single-threaded event loop; nginx worker_processes 1);
# the load generator and the tiny upstream share core 1. Both servers require a client
# certificate (ECDSA P-256, from Symbolon's dev CA), speak TLS 1.3 with X25519 (pinned on the
# client: nginx's OpenSSL 3.0 cannot do the post-quantum hybrid), have no access log and no session
# resumption, and proxy every request to the same keep-alive upstream with the client identity
# in headers. Scenarios: a new connection per request (full mTLS handshake each time) and
# keep-alive requests. The load generator reads the server processes' CPU time from /proc, so
# "CPU µs per request" holds even when the client side is the bottleneck.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-10}
CONC=${CONCURRENCY:-32}

need_nginx
bench_setup bench

make_certs "$WORK/data"
D=$WORK/data

UP_PORT=18080
SYM_PORT=18443
NGX_PORT=28443
taskset -c 1 "$LOADGEN" upstream --listen "127.0.0.1:$UP_PORT" >/dev/null &
PIDS+=($!)
wait_port 127.0.0.1 $UP_PORT

mtls_configs

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
    taskset -c 1 "$LOADGEN" load --addr "127.0.0.1:$2" --sni localhost \
        --cert "$D/client.pem" --key "$D/client.key" --mode "$4" \
        --concurrency "$CONC" --seconds "$SECS" --server-pids "$3" | grep '"done"' |
        sed "s/^{/{\"server\":\"$1\",\"mode\":\"$4\",/"
}

RESULTS=$WORK/results.jsonl
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(openssl version | cut -d' ' -f1-2); symbolon $(git rev-parse --short HEAD 2>/dev/null || echo dev); $ROUNDS rounds x ${SECS}s, concurrency $CONC" >&2
for round in $(seq 1 "$ROUNDS"); do
    for mode in handshake keepalive; do
        run symbolon $SYM_PORT "$SYM_PID" $mode | tee -a "$RESULTS" >&2
        run nginx $NGX_PORT "$NGX_PIDS" $mode | tee -a "$RESULTS" >&2
    done
done

summarize "$RESULTS" "handshake=new TLS 1.3 mTLS connection per request" "keepalive=keep-alive requests"
