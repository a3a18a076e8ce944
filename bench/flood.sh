#!/usr/bin/env bash
# A legitimate client under a flood, Symbolon vs nginx, one after the other in one run.
#
#   bash bench/flood.sh            # IDLE=6000 BAD=8 SECONDS_PER_RUN=10 by default
#
# Each server gets 8,192 descriptors and one core (Symbolon `--workers 1`, nginx
# worker_processes 1 with worker_connections 4096, as in run.sh), and the same mTLS setup as
# run.sh. The flood, from 127.0.0.1: IDLE idle TCP connections opened and held, and BAD loops of
# TLS handshakes with a certificate the server does not trust. Meanwhile a legitimate client
# (from 127.0.0.2) makes one new mTLS connection and request every 20 ms; its latency (p50,
# p99, max) and failures are what is reported. Symbolon runs with its defaults: connection
# caps derived from the descriptor limit, per client address included; nginx with its
# defaults (no limit_conn).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
IDLE=${IDLE:-6000}
BAD=${BAD:-8}
SECS=${SECONDS_PER_RUN:-10}

need_nginx
bench_setup flood
ulimit -n "$(ulimit -Hn)"

make_certs "$WORK/data"
D=$WORK/data
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=stranger \
    -keyout "$WORK/bad.key" -out "$WORK/bad.pem" -days 1 2>/dev/null

UP_PORT=18080
SYM_PORT=18443
NGX_PORT=28443
taskset -c 1 "$LOADGEN" upstream --listen "127.0.0.1:$UP_PORT" >/dev/null &
PIDS+=($!)
wait_port 127.0.0.1 $UP_PORT

mtls_configs

flood() { # name port
    taskset -c 1 "$LOADGEN" flood --addr "127.0.0.1:$2" --sni localhost \
        --cert "$D/client.pem" --key "$D/client.key" \
        --bad-cert "$WORK/bad.pem" --bad-key "$WORK/bad.key" \
        --idle "$IDLE" --bad "$BAD" --seconds "$SECS" | grep '"done"' |
        sed "s/^{/{\"server\":\"$1\",/"
}

RESULTS=$WORK/results.jsonl
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'); symbolon $(git rev-parse --short HEAD 2>/dev/null || echo dev); idle $IDLE, bad loops $BAD, ${SECS}s" >&2

(ulimit -n 8192; exec taskset -c 0 "$SYM" serve --workers 1 --config "$WORK/symbolon.toml") >"$WORK/symbolon.log" 2>&1 &
SYM_PID=$!
PIDS+=($SYM_PID)
wait_port 127.0.0.1 $SYM_PORT
flood symbolon $SYM_PORT | tee -a "$RESULTS" >&2
kill $SYM_PID; wait $SYM_PID 2>/dev/null || true

(ulimit -n 8192; exec taskset -c 0 nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log") >/dev/null 2>&1 &
PIDS+=($!)
wait_port 127.0.0.1 $NGX_PORT
flood nginx $NGX_PORT | tee -a "$RESULTS" >&2

python3 - "$RESULTS" <<'EOP'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("| server | idle connections held (of requested) | bad handshakes | legitimate requests ok / failed | p50 ms | p99 ms | max ms |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    held = r["idle_opened"] - r["idle_closed_by_server"]
    print(f"| {r['server']} | {held:,} (of {r['idle_opened'] + r['idle_refused']:,}) | {r['bad_handshakes']:,} | {r['legit_ok']} / {r['legit_failed']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |")
EOP
