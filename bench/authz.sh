#!/usr/bin/env bash
# What authorization costs per keep-alive request, with 100,000 identities loaded.
#
#   bash bench/authz.sh            # IDENTITIES=100000 ROUNDS=10 SECONDS_PER_RUN=4
#
# One Symbolon (pinned to core 0, one worker) with two routes to the same keep-alive upstream:
# /plain (no authorization) and /authz (auth = "mtls": the client's certificate must be bound
# to an identity, whose policy checks access rights, a token-bucket rate limit and a daily
# quota, and whose usage is counted). IDENTITIES identities are loaded through the admin API's
# import; the load generator's certificate is one of them. The load generator (core 1)
# alternates the two paths; the script reports server CPU µs per request for each and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
N=${IDENTITIES:-100000}
ROUNDS=${ROUNDS:-10}
SECS=${SECONDS_PER_RUN:-4}
CONC=${CONCURRENCY:-32}

bench_setup authz

make_certs "$WORK/data"
D=$WORK/data

UP_PORT=18081
SYM_PORT=18444
ADMIN_PORT=19444
taskset -c 1 "$LOADGEN" upstream --listen "127.0.0.1:$UP_PORT" >/dev/null &
PIDS+=($!)
wait_port 127.0.0.1 $UP_PORT

cat >"$WORK/symbolon.toml" <<EOF
listen = "127.0.0.1:$SYM_PORT"
metrics_listen = "127.0.0.1:0"
access_log = false
watch_files = false
tls13_session_tickets = 0

[[domains]]
names = ["localhost"]
cert = "$D/server.pem"
key = "$D/server.key"
trust_bundle = "$D/ca.pem"
mtls = "require"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
cert = "$D/server.pem"
key = "$D/server.key"
client_ca = "$D/admin-ca.pem"
max_upload_bytes = 268435456
EOF

taskset -c 0 "$SYM" serve --workers 1 --config "$WORK/symbolon.toml" >"$WORK/symbolon.log" 2>&1 &
SYM_PID=$!
PIDS+=($SYM_PID)
wait_port 127.0.0.1 $SYM_PORT

FP=$(openssl x509 -in "$D/client.pem" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr 'A-F' 'a-f')
python3 - "$N" "$FP" "$UP_PORT" >"$WORK/import.toml" <<'EOF'
import hashlib, sys
n, fp, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f'''[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "http://127.0.0.1:{port}"

[[routes]]
name = "authz"
path_prefix = "/authz"
upstream = "http://127.0.0.1:{port}"
[routes.authz]
auth = "mtls"

[[policies]]
name = "bench"
[[policies.access]]
route = "authz"
methods = ["GET"]
path_prefixes = ["/authz"]
[policies.rate_limit]
requests = 1000000000
per = "1s"
[policies.quota]
requests = 1000000000000
period = "day"
''')
for i in range(n - 1):
    f = hashlib.sha256(f"identity-{i}".encode()).hexdigest()
    print(f'[[identities]]\nname = "id-{i}"\nfingerprint = "{f}"\npolicy = "bench"\n')
print(f'[[identities]]\nname = "loadgen"\nfingerprint = "{fp}"\npolicy = "bench"\n')
EOF
start=$(date +%s.%N)
"$SYM" --data-dir "$D" --server "https://127.0.0.1:$ADMIN_PORT" import "$WORK/import.toml" >/dev/null
echo "imported $N identities in $(echo "$(date +%s.%N) - $start" | bc) s" >&2

RESULTS=$WORK/results.jsonl
for round in $(seq 1 "$ROUNDS"); do
    for path in plain authz; do
        taskset -c 1 "$LOADGEN" load --addr "127.0.0.1:$SYM_PORT" --sni localhost \
            --cert "$D/client.pem" --key "$D/client.key" --mode keepalive --path "/$path" \
            --concurrency "$CONC" --seconds "$SECS" --server-pids "$SYM_PID" | grep '"done"' |
            sed "s/^{/{\"path\":\"$path\",/" | tee -a "$RESULTS" >&2
    done
done
python3 - "$RESULTS" "$N" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(path, key): return statistics.median(r[key] for r in rows if r["path"] == path)
p, a = med("plain", "server_cpu_us_per_request"), med("authz", "server_cpu_us_per_request")
pr, ar = med("plain", "per_second"), med("authz", "per_second")
errors = sum(r["errors"] for r in rows)
print(f"\n| route | requests/s | server CPU µs/request |\n|---|---|---|")
print(f"| /plain (no authorization) | {pr:,.0f} | {p:.2f} |")
print(f"| /authz (identity by certificate, policy: access, rate limit, quota; {int(sys.argv[2]):,} identities) | {ar:,.0f} | {a:.2f} |")
plains = [r for r in rows if r["path"] == "plain"]
authzs = [r for r in rows if r["path"] == "authz"]
pairs = [100 * (z["server_cpu_us_per_request"] - q["server_cpu_us_per_request"]) / q["server_cpu_us_per_request"] for q, z in zip(plains, authzs)]
print(f"\nauthorization adds {100 * (a - p) / p:+.1f} % server CPU per keep-alive request (difference of the medians of {len(rows) // 2} rounds; errors: {errors})")
print(f"median of the {len(pairs)} paired rounds (each /plain run followed by an /authz run): {statistics.median(pairs):+.1f} %; pairs ranged {min(pairs):+.1f} % .. {max(pairs):+.1f} %")
EOF
