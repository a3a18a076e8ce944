# Shared by the bench/*.sh scripts (sourced, not run).

# wait_port HOST PORT: wait (up to 10 s) until something accepts connections there.
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1:$2" >&2
    return 1
}

# make_certs DIR: Symbolon's embedded default writes a dev CA, a localhost server certificate,
# a client certificate and an admin certificate into DIR. Started once on spare ports, then
# stopped. Needs $SYM.
make_certs() {
    "$SYM" serve --data-dir "$1" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 >/dev/null 2>&1 &
    local init=$!
    for _ in $(seq 1 200); do [ -f "$1/symbolon.toml" ] && break; sleep 0.05; done
    kill "$init"
    wait "$init" 2>/dev/null || true
}

# summarize RESULTS MODE=LABEL...: a markdown table of the medians of each mode, Symbolon vs
# nginx, from the JSON lines the load generator printed (tagged with "server" and "mode").
summarize() {
    python3 - "$@" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
modes = [a.split("=", 1) for a in sys.argv[2:]]
def med(server, mode, key):
    return statistics.median(r[key] for r in rows if r["server"] == server and r["mode"] == mode)
print()
print("| scenario | Symbolon /s | nginx /s | Symbolon server CPU µs/req | nginx server CPU µs/req | per-CPU-second ratio (Symbolon ÷ nginx) | throughput ratio |")
print("|---|---|---|---|---|---|---|")
for mode, label in modes:
    s_rate, n_rate = med("symbolon", mode, "per_second"), med("nginx", mode, "per_second")
    s_cpu, n_cpu = med("symbolon", mode, "server_cpu_us_per_request"), med("nginx", mode, "server_cpu_us_per_request")
    print(f"| {label} | {s_rate:,.0f} | {n_rate:,.0f} | {s_cpu:.1f} | {n_cpu:.1f} | {n_cpu / s_cpu:.2f}× | {s_rate / n_rate:.2f}× |")
rounds = len(rows) // (2 * len(modes))
print(f"\n(medians of {rounds} rounds; errors: {sum(r['errors'] for r in rows)})")
EOF
}

# need_nginx: installs Debian's nginx if it is missing. The package may start a default
# instance; the benchmarks run their own, so it is stopped.
need_nginx() {
    if ! command -v nginx >/dev/null; then
        echo "installing nginx (Debian package)" >&2
        apt-get update -qq && apt-get install -y -qq nginx >/dev/null
        nginx -s stop 2>/dev/null || true
    fi
}

# bench_setup NAME: checks for two cores, builds Symbolon and the load generator ($SYM,
# $LOADGEN), makes $WORK, and on exit kills the processes in $PIDS and those whose pid files
# (nginx's) are in $WORK.
bench_setup() {
    [ "$(nproc)" -ge 2 ] || { echo "needs at least 2 cores" >&2; exit 1; }
    cargo build --release -q -p symbolon -p symbolon-bench
    SYM=target/release/symbolon
    LOADGEN=target/release/loadgen
    WORK=$(mktemp -d "/tmp/symbolon-$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$WORK"/*.pid; do kill "$(cat "$f" 2>/dev/null)" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# mtls_configs: writes $WORK/symbolon.toml and $WORK/nginx.conf for the same mTLS reverse-proxy
# setup (client certificate required, no resumption, no access log, keep-alive upstream on
# $UP_PORT, identity headers), listening on $SYM_PORT and $NGX_PORT. Needs $D (make_certs).
mtls_configs() {
cat >"$WORK/symbolon.toml" <<EOF
listen = "127.0.0.1:$SYM_PORT"
metrics_listen = "127.0.0.1:0"
access_log = false
watch_files = false
tls13_session_tickets = 0   # as nginx below: ssl_session_tickets off

[[domains]]
names = ["localhost"]
cert = "$D/server.pem"
key = "$D/server.key"
trust_bundle = "$D/ca.pem"
mtls = "require"

[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
EOF

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 8192;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    upstream backend { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_PORT ssl;
        server_name localhost;
        ssl_certificate $D/server.pem;
        ssl_certificate_key $D/server.key;
        ssl_client_certificate $D/ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve X25519;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Client-Verify \$ssl_client_verify;
            proxy_set_header X-Client-Subject \$ssl_client_s_dn;
            proxy_set_header X-Client-Cert \$ssl_client_escaped_cert;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF

}
