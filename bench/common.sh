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
