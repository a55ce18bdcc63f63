#!/usr/bin/env bash
# A local Kubernetes control plane for tests, without Docker or kind:
# etcd + kube-apiserver (+ a minimal kube-controller-manager) on loopback,
# built from the pinned Go module in e2e/tools and cached outside the checkout.
#
#   e2e/control-plane.sh up       start (or find running); last stdout line = kubeconfig path
#   e2e/control-plane.sh down     stop everything and remove the state dir
#   e2e/control-plane.sh status   say whether it is up (exit 0 if up, 1 if not)
#   e2e/control-plane.sh env      print `export KUBECONFIG=...` (and PATH for kubectl)
#   e2e/control-plane.sh build    only build/cache the binaries; prints the bin dir
#   e2e/control-plane.sh kubectl ARGS...   run the cached kubectl against the cluster
#
# Environment:
#   TOLLGATE_CACHE            binary cache root      (default ~/.cache/tollgate)
#   TOLLGATE_STATE            state dir: certs, etcd data, logs, pids, kubeconfig
#                                                    (default /tmp/tollgate-cp)
#   TOLLGATE_APISERVER_PORT   kube-apiserver port    (default: a free loopback port)
#   TOLLGATE_ETCD_PORT        etcd client port       (default: a free loopback port)
#   TOLLGATE_ETCD_PEER_PORT   etcd peer port         (default: a free loopback port)
#   TOLLGATE_CONTROLLER_MANAGER=0   do not run kube-controller-manager
#   TOLLGATE_EXTRA_CONTROLLERS  more kube-controller-manager controllers, comma-separated
#                             (the conformance harness adds deployment and replicaset ones)
#   TOLLGATE_BUILD_PROCS      parallelism of the Go build (default 2, run under nice)
#   TOLLGATE_UP_TIMEOUT       seconds to wait for readiness (default 120)
#
# Everything but the result goes to stderr; daemon logs are in $STATE/*.log.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS_DIR="$SCRIPT_DIR/tools"

# Versions come from the tools module so they cannot drift from what is built.
modver() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$TOOLS_DIR/go.mod"; }
K8S_VERSION=$(modver k8s.io/kubernetes)
ETCD_VERSION=$(modver go.etcd.io/etcd/server/v3)

CACHE_ROOT=${TOLLGATE_CACHE:-${HOME:?HOME is not set}/.cache/tollgate}
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION"
STATE=${TOLLGATE_STATE:-/tmp/tollgate-cp}
KUBECONFIG_PATH="$STATE/admin.kubeconfig"
MARKER="$STATE/.tollgate-control-plane"
UP_TIMEOUT=${TOLLGATE_UP_TIMEOUT:-120}
RUN_KCM=${TOLLGATE_CONTROLLER_MANAGER:-1}
KCM_CONTROLLERS=garbage-collector-controller,namespace-controller,serviceaccount-controller,endpointslice-controller,clusterrole-aggregation-controller
[[ -z "${TOLLGATE_EXTRA_CONTROLLERS:-}" ]] || KCM_CONTROLLERS+=",$TOLLGATE_EXTRA_CONTROLLERS"

# Service CIDR: only a name space for ClusterIPs here; nothing routes to it.
SERVICE_CIDR=10.96.0.0/24
SERVICE_IP=10.96.0.1
SA_ISSUER=https://kubernetes.default.svc.cluster.local

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- build --

build_stamp() {
	# Rebuild when the pinned modules change, even at the same version
	# (comments in go.mod do not count).
	{ grep -v '^[[:space:]]*//' "$TOOLS_DIR/go.mod"; cat "$TOOLS_DIR/go.sum"; } | sha256sum | cut -d' ' -f1
}

binaries_ok() {
	local b
	for b in kube-apiserver kube-controller-manager kubectl etcd; do
		[[ -x "$BIN_DIR/$b" ]] || return 1
	done
	[[ "$(cat "$BIN_DIR/.stamp" 2>/dev/null)" == "$(build_stamp)" ]]
}

ensure_binaries() {
	binaries_ok && return 0
	command -v go >/dev/null || die "go is required to build the control plane binaries"
	mkdir -p "$CACHE_ROOT"
	# Serialise concurrent builds into the same cache.
	exec 8>"$CACHE_ROOT/.k8s-$K8S_VERSION.lock"
	flock -w 1800 8 || die "another build holds the cache lock"
	if binaries_ok; then exec 8>&-; return 0; fi

	local tmp start pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version
	tmp=$(mktemp -d "$CACHE_ROOT/.build-XXXXXX")
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	local ldflags="-s -w"
	local p
	for p in "$pkg" "$cgo"; do
		ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
		ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	log "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION and etcd $ETCD_VERSION into $BIN_DIR (first time only; takes a while)"
	start=$SECONDS
	(
		cd "$TOOLS_DIR"
		# A private build cache, dropped after a successful build (it grows to
		# ~4 GB); an interrupted build resumes from it.
		export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOCACHE="$CACHE_ROOT/.go-build"
		local procs=${TOLLGATE_BUILD_PROCS:-2}
		# (errexit does not apply inside `( ) ||`: chain with &&)
		nice -n 10 go build -p "$procs" -trimpath -ldflags "$ldflags" -o "$tmp/" \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kubectl &&
			nice -n 10 go build -p "$procs" -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
	) >&2 || { rm -rf "$tmp"; die "go build failed"; }
	build_stamp >"$tmp/.stamp"
	rm -rf "$CACHE_ROOT/.go-build"
	chmod 755 "$tmp"
	rm -rf "$BIN_DIR"
	mv "$tmp" "$BIN_DIR"
	log "built in $((SECONDS - start))s"
	exec 8>&-
}

# ------------------------------------------------------------- helpers --

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port VAR ENV_OVERRIDE: set VAR to the override or to a free loopback port
# not already handed out by this run.
TAKEN_PORTS=" "
pick_port() {
	local -n out=$1
	local p=${2:-} i
	if [[ -z "$p" ]]; then
		for i in $(seq 1 200); do
			# Below Linux's ephemeral range (32768+): outgoing connections made meanwhile can
			# then not take the port between this check and the daemon's bind.
			p=$((20000 + RANDOM % 12000))
			if [[ "$TAKEN_PORTS" != *" $p "* ]] && ! port_in_use "$p"; then break; fi
			p=
			: "$i"
		done
		[[ -n "$p" ]] || die "no free loopback port found"
	fi
	port_in_use "$p" && die "port $p on 127.0.0.1 is already in use"
	TAKEN_PORTS+="$p "
	out=$p
}

# pid_alive NAME: the daemon's pid file names a live process running our binary.
pid_alive() {
	local f="$STATE/$1.pid" pid exe
	[[ -f "$f" ]] || return 1
	pid=$(cat "$f")
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ "${exe% (deleted)}" == */"$1" ]]
}

stop_daemon() {
	local name=$1 pid i
	pid_alive "$name" || { rm -f "$STATE/$name.pid"; return 0; }
	pid=$(cat "$STATE/$name.pid")
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
		: "$i"
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "$name did not stop in 10s; killing"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$STATE/$name.pid"
}

# start_daemon NAME ARGS...: run $BIN_DIR/NAME in its own session, logging to
# $STATE/NAME.log. The child writes its own pid and then execs the daemon (same
# pid), so the pid file is right whether or not setsid had to fork.
start_daemon() {
	local name=$1 pidfile="$STATE/$1.pid" i
	shift
	rm -f "$pidfile"
	# Close the lock fds: a daemon inheriting them would hold the lock forever.
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid bash -c 'echo $$ >"$0" && exec "$@"' "$pidfile" "$BIN_DIR/$name" "$@" \
		>"$STATE/$name.log" 2>&1 </dev/null 8>&- 9>&- &
	for i in $(seq 1 100); do
		pid_alive "$name" && return 0
		sleep 0.05
		: "$i"
	done
	log "$name did not start; last lines of $STATE/$name.log:"
	tail -n 30 "$STATE/$name.log" >&2 || true
	exit 1
}

kctl() { KUBECACHEDIR="$STATE/kube-cache" "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

etcd_healthy() {
	local port=$1 reply
	reply=$(
		exec 2>/dev/null
		exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
		printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		timeout 2 cat <&3
	) || return 1
	[[ "$reply" == *'"health":"true"'* ]]
}

wait_for() {
	local what=$1 daemon=$2 deadline=$((SECONDS + UP_TIMEOUT))
	shift 2
	until "$@"; do
		if ! pid_alive "$daemon"; then
			log "$daemon exited; last lines of $STATE/$daemon.log:"
			tail -n 30 "$STATE/$daemon.log" >&2 || true
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "timed out after ${UP_TIMEOUT}s waiting for $what; see $STATE/$daemon.log"
			return 1
		fi
		sleep 0.2
	done
}

apiserver_ready() { kctl get --raw /readyz >/dev/null 2>&1; }

is_up() {
	[[ -f "$MARKER" && -f "$KUBECONFIG_PATH" ]] || return 1
	pid_alive etcd && pid_alive kube-apiserver || return 1
	if [[ -f "$STATE/kube-controller-manager.enabled" ]]; then
		pid_alive kube-controller-manager || return 1
	fi
	apiserver_ready
}

# ---------------------------------------------------------------- certs --

gen_certs() {
	local d="$STATE/pki"
	mkdir -p "$d"
	chmod 700 "$d"
	(
		cd "$d"
		openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
			-keyout ca.key -out ca.crt -subj "/CN=tollgate-e2e-ca" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign"

		# sign NAME SUBJECT EXTENSIONS
		sign() {
			openssl req -new -newkey rsa:2048 -nodes -sha256 \
				-keyout "$1.key" -out "$1.csr" -subj "$2"
			printf '%b\n' "$3" >"$1.ext"
			openssl x509 -req -sha256 -days 3650 -in "$1.csr" \
				-CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -extfile "$1.ext"
			rm -f "$1.csr" "$1.ext"
		}
		sign apiserver "/CN=kube-apiserver" \
			"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
		sign admin "/O=system:masters/CN=tollgate-admin" \
			"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
		# The controller manager acts with full rights (it runs the garbage
		# collector and namespace deletion over every resource type).
		sign kube-controller-manager "/O=system:masters/CN=system:kube-controller-manager" \
			"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"

		# Service-account token signing keypair (TokenRequest / TokenReview).
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
		openssl pkey -in sa.key -pubout -out sa.pub
		chmod 600 ./*.key
	) >/dev/null 2>"$STATE/openssl.log" || {
		cat "$STATE/openssl.log" >&2
		die "certificate generation failed"
	}
}

write_kubeconfig() {
	local out=$1 user=$2 server=$3 d="$STATE/pki"
	umask 077
	cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tollgate-e2e
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$d/$user.crt")
    client-key-data: $(base64 -w0 "$d/$user.key")
contexts:
- name: tollgate-e2e
  context:
    cluster: tollgate-e2e
    user: $user
    namespace: default
current-context: tollgate-e2e
EOF
}

# ------------------------------------------------------------- commands --

safe_remove_state() {
	[[ -e "$STATE" ]] || return 0
	if [[ ! -f "$MARKER" ]]; then
		if [[ -d "$STATE" && -z "$(ls -A "$STATE")" ]]; then
			rmdir "$STATE"
			return 0
		fi
		die "$STATE exists but was not made by this script (no $(basename "$MARKER")); refusing to remove it"
	fi
	rm -rf "$STATE"
}

stop_all() {
	stop_daemon kube-controller-manager
	stop_daemon kube-apiserver
	stop_daemon etcd
}

do_down() {
	stop_all
	safe_remove_state
	[[ "${1:-}" == quiet ]] || log "down"
}

do_up() {
	ensure_binaries
	if is_up; then
		log "already up: $(cat "$STATE/apiserver.url")"
		echo "$KUBECONFIG_PATH"
		return 0
	fi
	# Not (fully) up: clear any leftovers and start fresh.
	do_down quiet
	local t0=$SECONDS
	mkdir -p "$STATE"
	chmod 700 "$STATE"
	: >"$MARKER"
	# On failure stop what was started, but keep the state dir for its logs.
	trap 'log "up failed; logs are in $STATE"; stop_all' EXIT

	local api_port etcd_port peer_port
	pick_port api_port "${TOLLGATE_APISERVER_PORT:-}"
	pick_port etcd_port "${TOLLGATE_ETCD_PORT:-}"
	pick_port peer_port "${TOLLGATE_ETCD_PEER_PORT:-}"
	local server="https://127.0.0.1:$api_port"
	echo "$server" >"$STATE/apiserver.url"

	gen_certs
	write_kubeconfig "$KUBECONFIG_PATH" admin "$server"
	write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" kube-controller-manager "$server"

	log "starting etcd $ETCD_VERSION on 127.0.0.1:$etcd_port"
	start_daemon etcd \
		--name=tollgate-e2e \
		--data-dir="$STATE/etcd" \
		--listen-client-urls="http://127.0.0.1:$etcd_port" \
		--advertise-client-urls="http://127.0.0.1:$etcd_port" \
		--listen-peer-urls="http://127.0.0.1:$peer_port" \
		--initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
		--initial-cluster="tollgate-e2e=http://127.0.0.1:$peer_port" \
		--initial-cluster-state=new \
		--unsafe-no-fsync \
		--log-level=warn
	wait_for etcd etcd etcd_healthy "$etcd_port" || die "etcd did not become healthy"

	log "starting kube-apiserver $K8S_VERSION on $server"
	local d="$STATE/pki" admission=()
	# Without the controller manager no namespace gets a `default`
	# ServiceAccount, and ServiceAccount admission would refuse every Pod.
	[[ "$RUN_KCM" != 0 ]] || admission=(--disable-admission-plugins=ServiceAccount)
	start_daemon kube-apiserver "${admission[@]}" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--secure-port="$api_port" \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--tls-cert-file="$d/apiserver.crt" \
		--tls-private-key-file="$d/apiserver.key" \
		--client-ca-file="$d/ca.crt" \
		--service-account-issuer="$SA_ISSUER" \
		--service-account-key-file="$d/sa.pub" \
		--service-account-signing-key-file="$d/sa.key" \
		--api-audiences="$SA_ISSUER" \
		--authorization-mode=RBAC \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--endpoint-reconciler-type=none \
		--profiling=false \
		--v=1
	wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready || die "kube-apiserver did not become ready"

	if [[ "$RUN_KCM" != 0 ]]; then
		log "starting kube-controller-manager ($KCM_CONTROLLERS)"
		: >"$STATE/kube-controller-manager.enabled"
		start_daemon kube-controller-manager \
			--kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
			--controllers="$KCM_CONTROLLERS" \
			--leader-elect=false \
			--secure-port=0 \
			--use-service-account-credentials=false \
			--v=1
	fi

	# The apiserver creates `default` itself shortly after start; make sure.
	local deadline=$((SECONDS + 30))
	until kctl get namespace default >/dev/null 2>&1; do
		kctl create namespace default >/dev/null 2>&1 || true
		((SECONDS < deadline)) || die "namespace default does not exist"
		sleep 0.2
	done
	if [[ "$RUN_KCM" != 0 ]]; then
		# The serviceaccount controller creating default/default shows the
		# controller manager is working.
		wait_for "kube-controller-manager (serviceaccount default/default)" kube-controller-manager \
			kctl -n default get serviceaccount default -o name >/dev/null 2>&1 ||
			die "kube-controller-manager did not start"
	fi
	trap - EXIT
	log "up in $((SECONDS - t0))s: $server (logs and pids in $STATE)"
	echo "$KUBECONFIG_PATH"
}

do_status() {
	if is_up; then
		local pids
		pids="etcd=$(cat "$STATE/etcd.pid") kube-apiserver=$(cat "$STATE/kube-apiserver.pid")"
		if [[ -f "$STATE/kube-controller-manager.enabled" ]]; then
			pids+=" kube-controller-manager=$(cat "$STATE/kube-controller-manager.pid")"
		fi
		echo "up: $(cat "$STATE/apiserver.url") kubeconfig=$KUBECONFIG_PATH $pids"
		return 0
	fi
	if [[ -f "$MARKER" ]]; then
		echo "down (stale state in $STATE; run '$0 down' to clean up)"
	else
		echo "down"
	fi
	return 1
}

do_env() {
	printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_PATH"
	# kubectl's discovery cache is per host:port; keep it with the cluster.
	printf 'export KUBECACHEDIR=%q\n' "$STATE/kube-cache"
	# shellcheck disable=SC2016 # $PATH is for the shell that evals this
	printf 'export PATH=%q:"$PATH"\n' "$BIN_DIR"
}

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

main() {
	local cmd=${1:-}
	[[ $# -gt 0 ]] && shift
	[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" ]] || die "cannot read versions from $TOOLS_DIR/go.mod"
	case "$cmd" in
	up | down)
		mkdir -p "$(dirname "$STATE")"
		exec 9>"$STATE.lock"
		flock -w 300 9 || die "another up/down holds $STATE.lock"
		"do_$cmd"
		;;
	status) do_status ;;
	env) do_env ;;
	build)
		ensure_binaries
		echo "$BIN_DIR"
		;;
	kubectl)
		ensure_binaries
		KUBECACHEDIR="$STATE/kube-cache" exec "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"
		;;
	*) usage ;;
	esac
}

main "$@"
