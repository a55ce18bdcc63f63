# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/instructions.sh; sourced, not run. The caller sets ROOT
# (the repository) and runs with `set -euo pipefail`. Everything listens on 127.0.0.1 only.

BENCH_MANIFESTS="$ROOT/bench/manifests"
BENCH_LUA="$ROOT/bench/wrk-key.lua"
# shellcheck disable=SC2034 # used by the scripts that source this file
KEY_HEADER="X-Subscription-Key"
KEY="$(sed -n 's/.*wrk.headers\["X-Subscription-Key"\] = "\(.*\)".*/\1/p' "$BENCH_LUA")"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

[[ -n "$KEY" ]] || die "no X-Subscription-Key found in $BENCH_LUA"

# nginx and haproxy live in /usr/sbin, which may not be on a non-root PATH.
export PATH="$PATH:/usr/sbin:/sbin"

# --- binaries --------------------------------------------------------------------------------

# bench_binaries [need-proxy: 1|0]: sets PROXY_BIN and BACKEND_BIN. A path given in the environment
# is used as it is (BACKEND_BIN defaults to tollgate-demo-backend beside PROXY_BIN when that
# exists); whatever is still missing is built with `cargo build --release --locked` in ROOT.
bench_binaries() {
    local need_proxy="${1:-1}" packages=()
    if [[ -z "${BACKEND_BIN:-}" && -n "${PROXY_BIN:-}" && -x "$(dirname "$PROXY_BIN")/tollgate-demo-backend" ]]; then
        BACKEND_BIN="$(dirname "$PROXY_BIN")/tollgate-demo-backend"
    fi
    [[ -z "${BACKEND_BIN:-}" ]] && packages+=(-p tollgate-demo-backend)
    [[ "$need_proxy" == 1 && -z "${PROXY_BIN:-}" ]] && packages+=(-p tollgate-proxy)
    if ((${#packages[@]} > 0)); then
        log "building release binaries (${packages[*]}) in $ROOT"
        (cd "$ROOT" && cargo build --release --locked -q "${packages[@]}")
        local target_dir
        target_dir="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
            | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
        BACKEND_BIN="${BACKEND_BIN:-$target_dir/release/tollgate-demo-backend}"
        [[ "$need_proxy" == 1 ]] && PROXY_BIN="${PROXY_BIN:-$target_dir/release/tollgate-proxy}"
    fi
    PROXY_BIN="${PROXY_BIN:-}"
    [[ -x "$BACKEND_BIN" ]] || die "demo backend binary not found or not executable: $BACKEND_BIN"
    if [[ "$need_proxy" == 1 ]]; then
        [[ -x "$PROXY_BIN" ]] || die "tollgate-proxy binary not found or not executable: $PROXY_BIN"
    fi
    return 0
}

# floor_binary: sets FLOOR_BIN to bench/floor's release binary (the HTTP engine alone: hyper +
# tokio + mimalloc, no policy), building it when FLOOR_BIN is not given. bench/floor is its own
# crate, outside the workspace, so this build does not touch the workspace's lock or target.
floor_binary() {
    if [[ -z "${FLOOR_BIN:-}" ]]; then
        log "building bench/floor (release)"
        (cd "$ROOT/bench/floor" && cargo build --release --locked -q)
        FLOOR_BIN="$(cd "$ROOT/bench/floor" && cargo metadata --format-version 1 --no-deps \
            | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/tollgate-floor"
    fi
    [[ -x "$FLOOR_BIN" ]] || die "FLOOR_BIN=$FLOOR_BIN is not executable"
}

# tollgate_args MANIFEST-DIR PORT ADMIN-PORT: sets TOLLGATE_ARGS, the flags every bench run uses:
# one worker thread (fair next to nginx's one worker), no access log (nginx has access_log off).
tollgate_args() {
    TOLLGATE_ARGS=(--from-dir "$1" --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3")
    local help
    help="$("$PROXY_BIN" --help 2>&1 || true)"
    if grep -q -- '--threads' <<<"$help"; then TOLLGATE_ARGS+=(--threads 1); fi
    if grep -q -- '--access-log' <<<"$help"; then TOLLGATE_ARGS+=(--access-log off); fi
    return 0
}

# --- ports -----------------------------------------------------------------------------------

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A socket listening on 127.0.0.1:PORT, read from /proc/net/tcp: costs the server nothing (no
# connection), which matters when its instructions are being counted.
port_listening() {
    local hex
    printf -v hex '0100007F:%04X' "$1"
    awk -v a="$hex" '$2 == a && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp
}

# pick_port VAR DEFAULT: the port given in the environment (it must be free), else the first free
# one from DEFAULT that no earlier pick_port took.
TAKEN=()
pick_port() {
    local var="$1" port="${!1:-}"
    if [[ -n "$port" ]]; then
        port_in_use "$port" && die "$var=$port: port $port on 127.0.0.1 is in use"
    else
        port="$2"
        while port_in_use "$port" || [[ " ${TAKEN[*]} " == *" $port "* ]]; do
            port=$((port + 1))
            ((port < 65536)) || die "no free port from $2 up for $var"
        done
    fi
    TAKEN+=("$port")
    printf -v "$var" '%s' "$port"
}

# --- configurations --------------------------------------------------------------------------

# bench_manifests DIR BACKEND-PORT: a copy of bench/manifests with the backend URL pointed at
# 127.0.0.1:BACKEND-PORT (the committed manifests name 127.0.0.1:19000).
bench_manifests() {
    mkdir -p "$1"
    sed "s|http://127.0.0.1:19000|http://127.0.0.1:$2|" "$BENCH_MANIFESTS/bench.yaml" >"$1/bench.yaml"
    grep -q "url: http://127.0.0.1:$2\$" "$1/bench.yaml" \
        || die "bench/manifests/bench.yaml no longer has backend url http://127.0.0.1:19000; update bench/lib.sh"
}

# nginx_conf DIR LISTEN-PORT BACKEND-PORT VARIANT MASTER: writes DIR/nginx.conf (and DIR/logs).
#   VARIANT plain:  a plain reverse proxy: keep-alive upstream pool, X-Forwarded-For, no limit on
#                   requests per keep-alive connection (nginx's default is 1000) on either side.
#   VARIANT policy: the same plus what tollgate does on the bench route: the key header mapped to
#                   a subscription (unknown or missing key: 401), a per-subscription limit_req
#                   whose rate (1e8/s, burst 1e6) is enforced but never trips, the key header not
#                   forwarded, X-Gateway set, X-Forwarded-Proto/-Host and an X-Request-Id (also
#                   echoed to the client), exact route /bench and GET only (else 404 / 403).
#   MASTER on:  master process + one worker (bench/run.sh); off: a single process that does the
#               work itself (bench/instructions.sh, so valgrind sees the worker).
# nginx_conf writes `daemon off` either way: the caller keeps the process in the foreground.
nginx_conf() {
    local dir="$1" port="$2" backend_port="$3" variant="$4" master="$5"
    local user_line="" http_extra="" location
    mkdir -p "$dir/logs"
    ((EUID == 0)) && user_line="user root;"
    case "$variant" in
        plain)
            location="    location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }"
            ;;
        policy)
            http_extra="    server_tokens off;
    # The subscription key -> subscription; an unknown key maps to \"\" and is refused below.
    map \$http_x_subscription_key \$bench_subscription {
        default \"\";
        \"$KEY\" loadgen;
    }
    # The plan's rate limit, per subscription: enforced on every call, never reached. nginx's
    # limit_req refuses a second request in the same millisecond unless there is a burst.
    limit_req_zone \$bench_subscription zone=bench_plan:1m rate=100000000r/s;
    limit_req_status 429;"
            location="    location = /bench {
            if (\$bench_subscription = \"\") {
                return 401;
            }
            limit_except GET {
                deny all;
            }
            limit_req zone=bench_plan burst=1000000 nodelay;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$request_id;
            proxy_set_header X-Subscription-Key \"\";
            proxy_set_header X-Gateway tollgate;
            # nginx never passes the backend's Server header; its own is \"nginx\" (server_tokens
            # off): nginx-light has no way to drop it.
            proxy_hide_header Server;
            add_header X-Request-Id \$request_id always;
        }
        location / {
            return 404;
        }"
            ;;
        *) die "nginx_conf: unknown variant $variant" ;;
    esac
    cat >"$dir/nginx.conf" <<EOF
# Generated by bench/lib.sh ($variant): one worker, keep-alive upstream pool, no access log.
$user_line
master_process $master;
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # nginx closes a keep-alive connection after 1000 requests by default (client side and
    # upstream side); tollgate-proxy and haproxy do not.
    keepalive_requests 100000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$http_extra
    upstream backend {
        server 127.0.0.1:$backend_port;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$port;
    $location
    }
}
EOF
}

# haproxy_conf DIR LISTEN-PORT BACKEND-PORT VARIANT: writes DIR/haproxy.cfg (and DIR/keys.map).
#   VARIANT plain:  a plain reverse proxy: one thread, keep-alive on both sides, server
#                   connections reused across client connections (http-reuse always),
#                   X-Forwarded-For.
#   VARIANT policy: the same plus the key header looked up in a map file (unknown or missing key:
#                   401), a stick table keyed on the key header that tracks the request rate and
#                   count, a deny (429) above a rate that is never reached, the key header removed,
#                   X-Gateway set, X-Forwarded-Proto/-Host and an X-Request-Id (echoed to the
#                   client), the backend's Server header removed, exact route /bench and GET only.
# Run it in the foreground with `haproxy -db -f DIR/haproxy.cfg`.
haproxy_conf() {
    local dir="$1" port="$2" backend_port="$3" variant="$4" frontend_extra=""
    mkdir -p "$dir"
    case "$variant" in
        plain) ;;
        policy)
            printf '%s loadgen\n' "$KEY" >"$dir/keys.map"
            frontend_extra="    # The plan's rate limit (and a request count, as the quota), per key: never reached.
    stick-table type string len 128 size 10k expire 1h store http_req_rate(1s),http_req_cnt
    http-request set-var(txn.subscription) req.hdr(X-Subscription-Key),map($dir/keys.map)
    http-request return status 401 content-type text/plain string \"unknown key\" unless { var(txn.subscription) -m found }
    http-request return status 404 content-type text/plain string \"no route\" unless { path /bench }
    http-request return status 405 content-type text/plain string \"method\" unless METH_GET
    http-request track-sc0 req.hdr(X-Subscription-Key)
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }
    http-request set-var(txn.request_id) uuid
    http-request del-header X-Subscription-Key
    http-request set-header X-Gateway tollgate
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Request-Id %[var(txn.request_id)]
    http-response del-header Server
    http-response set-header X-Request-Id %[var(txn.request_id)]"
            ;;
        *) die "haproxy_conf: unknown variant $variant" ;;
    esac
    cat >"$dir/haproxy.cfg" <<EOF
# Generated by bench/lib.sh ($variant): one thread, keep-alive upstream reuse, no logging.
global
    nbthread 1
    maxconn 4096
    pidfile $dir/haproxy.pid

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:$port
$frontend_extra
    default_backend backend

backend backend
    server demo 127.0.0.1:$backend_port
EOF
}
