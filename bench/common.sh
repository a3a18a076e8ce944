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
