#!/usr/bin/env bash
# The pinned Helm, built once from its Go module and cached outside the checkout (like
# e2e/control-plane.sh caches the Kubernetes binaries).
#
#   e2e/helm.sh path        build if missing; print the helm binary's path
#   e2e/helm.sh ARGS...     run the cached helm with ARGS
#
# Environment:
#   TOLLGATE_CACHE          cache root (default ~/.cache/tollgate); helm goes to helm-<version>/
#   TOLLGATE_HELM_VERSION   override the pinned version (default below)
#   TOLLGATE_BUILD_PROCS    parallelism of the Go build (default 2, run under nice)
set -euo pipefail

# Pinned: a v3 release available on the Go module proxy. Changing it rebuilds into a new dir.
HELM_VERSION=${TOLLGATE_HELM_VERSION:-v3.22.0}
CACHE_ROOT=${TOLLGATE_CACHE:-${HOME:?HOME is not set}/.cache/tollgate}
HELM_DIR="$CACHE_ROOT/helm-$HELM_VERSION"
HELM_BIN="$HELM_DIR/helm"
# Bumped when the build recipe below changes, so a cached binary built the old way is replaced.
RECIPE=2

log() { printf '[helm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

helm_ok() { [[ -x "$HELM_BIN" && "$(cat "$HELM_DIR/.stamp" 2>/dev/null)" == "$HELM_VERSION recipe $RECIPE" ]]; }

ensure_helm() {
	helm_ok && return 0
	command -v go >/dev/null || die "go is required to build helm $HELM_VERSION (once; then cached in $HELM_DIR)"
	mkdir -p "$CACHE_ROOT"
	exec 7>"$CACHE_ROOT/.helm-$HELM_VERSION.lock"
	flock -w 1800 7 || die "another build holds the helm cache lock"
	if helm_ok; then exec 7>&-; return 0; fi
	local tmp start=$SECONDS
	tmp=$(mktemp -d "$CACHE_ROOT/.helm-build-XXXXXX")
	log "building helm $HELM_VERSION into $HELM_DIR (first time only; a few minutes)"
	# The ldflags of Helm's own Makefile: its version, and the Kubernetes version that `helm
	# template` and `helm lint` assume (major+1.minor of its client-go, v0.37 -> 1.37; without
	# them Helm assumes v1.20 and refuses the chart's kubeVersion).
	local gomod client_go minor
	gomod=$(cd "$CACHE_ROOT" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
	[[ -f "$gomod" ]] || die "cannot download helm.sh/helm/v3@$HELM_VERSION from the Go module proxy"
	client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
	minor=$(cut -d. -f2 <<<"$client_go")
	[[ "$client_go" == v0.* && -n "$minor" ]] || die "cannot read the client-go version from $gomod"
	local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" p
	for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
	done
	# A private build cache, dropped after a successful build; an interrupted build resumes from it.
	(
		export CGO_ENABLED=0 GOBIN="$tmp" GOCACHE="$CACHE_ROOT/.go-build-helm" GOFLAGS="-buildvcs=false"
		nice -n 10 go install -p "${TOLLGATE_BUILD_PROCS:-2}" -trimpath -ldflags "$ldflags" \
			"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
	) >&2 || { rm -rf "$tmp"; die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"; }
	echo "$HELM_VERSION recipe $RECIPE" >"$tmp/.stamp"
	rm -rf "$CACHE_ROOT/.go-build-helm" "$HELM_DIR"
	chmod 755 "$tmp"
	mv "$tmp" "$HELM_DIR"
	log "built in $((SECONDS - start))s"
	exec 7>&-
}

main() {
	ensure_helm
	if [[ "${1:-}" == path ]]; then
		echo "$HELM_BIN"
		return 0
	fi
	exec "$HELM_BIN" "$@"
}

main "$@"
